"""`tformer serve`: an OpenAI-compatible HTTP server with continuous batching.

`create_app` builds the FastAPI app over one model (routes in `app`, request bodies in
`schemas`, refusals in `errors` and `guards`); `Scheduler` decodes every request's rows in
one batch on a thread of its own (`scheduler`, per-row rules in `rows`). Needs the `serve`
extra (fastapi, uvicorn).
"""

from tformer.serving.app import ServerSettings, create_app
from tformer.serving.scheduler import Busy, Scheduler

__all__ = ["Busy", "Scheduler", "ServerSettings", "create_app"]
