# `transferkit serve` in a container: CPU-only PyTorch, the offline model zoo, nothing fetched at run time.
#
#   docker build -t transferkit-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/runs/spam:/model:ro" transferkit-serve
#   curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"texts": ["WIN A FREE CRUISE"]}'
#
# The run folder (fit --out) is mounted read-only at /model.  Inside the container the server binds
# 0.0.0.0 so that a published port reaches it; `-p 127.0.0.1:8000:8000` keeps it on this machine.
# Options after the image name go to `transferkit serve` (e.g. `--max-batch 16`).  A run whose
# backbone is a Hub model rather than a zoo name needs the Hub cache mounted too
# (-v ~/.cache/huggingface:/home/transferkit/.cache/huggingface:ro): HF_HUB_OFFLINE=1 downloads nothing.
FROM python:3.11-slim-bookworm

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFERKIT_CACHE=/tmp/transferkit-cache

WORKDIR /src
COPY pyproject.toml constraints.txt README.md LICENSE ./
COPY transferkit ./transferkit

# torch from PyTorch's CPU index first (PyPI's default Linux wheel bundles CUDA: gigabytes), then
# transferkit with the server and the offline zoo, every version pinned by constraints.txt.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0" \
 && pip install --no-cache-dir -c constraints.txt ".[serve,zoo]" \
 && useradd --create-home --uid 10001 transferkit

USER 10001
WORKDIR /home/transferkit
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4)"]
ENTRYPOINT ["transferkit", "serve", "/model", "--host", "0.0.0.0", "--port", "8000"]
