"""video-download-api: an aiohttp service that downloads videos with yt-dlp in worker processes."""

__version__ = "1.0.0"
