"""Running the work: the scheduler, the download host (yt-dlp, FFmpeg) and its protocol, the
address guard, retention, events, callbacks."""
