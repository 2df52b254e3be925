# gunicorn settings for the ContextForge peer (bench/peers/contextforge.sh), after the
# maintainers' production launcher: uvicorn workers, the app preloaded before the fork, a long
# worker timeout, workers recycled only after many requests. Bind, worker count and logs come
# from the command line.
from uvicorn.workers import UvicornWorker  # noqa: F401  (uvloop + httptools when installed)

worker_class = "uvicorn.workers.UvicornWorker"
preload_app = True
timeout = 600
max_requests = 100000
max_requests_jitter = 100
loglevel = "warning"


def post_fork(server, worker):
    # With the app preloaded, the master opened the database engine; each worker must drop the
    # inherited connection pool (without closing the master's sockets) and open its own.
    from mcpgateway.db import engine

    engine.dispose(close=False)
