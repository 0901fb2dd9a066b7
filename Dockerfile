ARG PYTHON_IMAGE=python:3.11-slim
# Any Debian-like base with Python >= 3.11 and its venv module will do: a site without Docker
# Hub passes its own with --build-arg PYTHON_IMAGE=… (docs/deployment.md makes one with
# debootstrap). `python3` is the name both python:3.11-slim and Debian's own python3 answer to.

# --- build: a virtual environment holding the project and its dependencies, nothing else ---
FROM ${PYTHON_IMAGE} AS build
RUN python3 -m venv /opt/venv
WORKDIR /src
# The whole context (.dockerignore keeps logs, venvs and secrets out), so that a wheels/ folder
# is used when it is there and its absence is no error.
COPY . .
# With wheels/ (`pip wheel . -w wheels` on the host) the build needs no network at all.
RUN if [ -d wheels ]; then \
        /opt/venv/bin/pip install --no-cache-dir --no-index --find-links wheels study-query-llm; \
    else \
        /opt/venv/bin/pip install --no-cache-dir .; \
    fi

# --- runtime: the same base, the venv, an unprivileged user and the log in a volume ---
FROM ${PYTHON_IMAGE}
# A fixed uid, so that a bind-mounted /data can be given to it on the host (chown 10001), and
# numeric in USER so that a runtime can tell it is not root without reading /etc/passwd.
RUN groupadd --system --gid 10001 study \
    && useradd --system --uid 10001 --gid study --no-create-home --home-dir /data \
        --shell /usr/sbin/nologin study \
    && mkdir /data && chown study:study /data && chmod 0750 /data
COPY --from=build /opt/venv /opt/venv
# Bound to every interface of the container: only the ports published with -p are reachable,
# and STUDY_ALLOW_OPEN says that this is meant (docs/deployment.md: keys and ALLOWED_HOSTS).
# The log and the journal and spool files beside it live in the volume.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATABASE_URL=sqlite:////data/study_query_llm.db \
    PANEL_ADDRESS=0.0.0.0 \
    PANEL_PORT=8000 \
    STUDY_ALLOW_OPEN=1
# The working directory is the volume too, so that a relative sqlite:///… path from an env
# file still lands in it.
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001
EXPOSE 8000
STOPSIGNAL SIGTERM
# Python's urllib, as the base may have no curl; a non-2xx answer or no answer is unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PANEL_PORT', '8000'), timeout=4)"]
ENTRYPOINT ["study-query-llm"]
CMD ["serve"]
