"""Running the work: the scheduler, worker processes (yt-dlp, FFmpeg) and their protocol, the
address guard, retention, events, callbacks."""
