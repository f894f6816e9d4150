"""Downloads (seed §8): fetch a URL to the downloads directory in the background, safely.

- ``guard``: which URLs and addresses may be fetched, and the resolver that pins the checked one;
- ``filenames``: a requested or URL-derived name reduced to a safe, unused basename;
- ``transfer``: one download streamed to a temporary file, redirects checked hop by hop;
- ``records``: what is known about a download (its state, bytes, error);
- ``manager``: ``DownloadManager``, which runs them as tasks under a concurrency cap;
- ``errors``: the refusals and failures, each with its HTTP status.
"""
