"""video-download-api: an aiohttp service that downloads videos with yt-dlp in a download host process."""

__version__ = "1.0.0"
