# Lyricist: the HTTP service on the two shipped models (songs first, the default), CPU only.
#
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index URL> -t lyricist .
#   docker run -p 8000:8000 lyricist
#
# The URL is the one pytorch.org's install selector shows for pip + CPU; the project
# keeps no index host names in its files, so it is always passed in.

FROM python:3.11-slim AS builder

ARG TORCH_INDEX_URL
RUN if [ -z "$TORCH_INDEX_URL" ]; then \
      echo "TORCH_INDEX_URL is not set. Pass PyTorch's CPU wheel index URL, the one pytorch.org's install" \
           "selector shows for pip + CPU: docker build --build-arg TORCH_INDEX_URL=<that URL> ..." >&2; \
      exit 1; \
    fi

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The CPU build first, pinned: the project's own torch==2.13.0 requirement is then already met,
# so pip never swaps in the default (CUDA) build. Its own layer, so source edits do not redo it.
RUN pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0

# Editable, so the package reads its data (the demo page, the shipped models) from /app.
WORKDIR /app
COPY pyproject.toml README.md ./
COPY model ./model
COPY training ./training
COPY app ./app
RUN pip install -e .
COPY checkpoints/songs-lstm ./checkpoints/songs-lstm
COPY checkpoints/shakespeare-lstm ./checkpoints/shakespeare-lstm


FROM python:3.11-slim

RUN useradd --create-home --uid 10001 lyricist
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
WORKDIR /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LYRICIST_HOST=0.0.0.0 \
    LYRICIST_PORT=8000 \
    LYRICIST_MODELS=/app/checkpoints/songs-lstm,/app/checkpoints/shakespeare-lstm

USER lyricist
EXPOSE 8000

# urllib, not curl: the slim image has no curl. A non-2xx answer or no answer raises, so the check fails.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('LYRICIST_PORT', '8000') + '/healthz', timeout=4)"]

ENTRYPOINT ["lyricist"]
CMD ["serve"]
