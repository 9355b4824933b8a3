# nnsens dashboard image: serves the app on port 8501.
#   docker build -t nnsens . && docker run -p 8501:8501 nnsens
#   public demo server: docker run -p 8501:8501 -e NNSENS_PUBLIC=1 nnsens   (see docs/security.md)
# For a CPU-only image add: --build-arg PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
#
# Base image: pinned to an exact Python patch release and Debian release (the Python of the
# project's own venv, 3.11.7). A tag can still be re-pushed by Docker Hub; for byte-identical builds
# pin the digest too. To refresh (on a machine with network):
#   docker pull python:3.11.7-slim-bookworm
#   docker inspect --format '{{index .RepoDigests 0}}' python:3.11.7-slim-bookworm
# and write the result here as  FROM python:3.11.7-slim-bookworm@sha256:<digest>
# (the digest could not be looked up where this file was written, so none is invented here).
FROM python:3.11.7-slim-bookworm

ARG PIP_EXTRA_INDEX_URL=""
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}

RUN apt-get update && apt-get install -y --no-install-recommends libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# every runtime dependency is pinned exactly (==) in requirements.txt
COPY requirements.txt ./
RUN pip install -r requirements.txt

# Code, demo weights and demo data are copied as root and stay read-only for the server's user;
# nothing is written at run time (no cache directory: the demos are read from the image).
COPY pyproject.toml README.md app.py ./
COPY .streamlit ./.streamlit
COPY pages ./pages
COPY ui ./ui
COPY nnsens_core ./nnsens_core
COPY models ./models
RUN pip install --no-deps . && chmod -R a-w /app

RUN useradd --no-create-home --shell /usr/sbin/nologin nnsens
USER nnsens
# Streamlit and torch look for a home / cache directory; point them at a place that need not exist
ENV HOME=/tmp

EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health')"
CMD ["python", "-m", "streamlit", "run", "app.py", "--server.port=8501", "--server.address=0.0.0.0"]
