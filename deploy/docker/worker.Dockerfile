# A GPU worker: CUDA runtime, PyTorch's CUDA wheel, diffusers; non-root; models cached on a volume.
#   docker build -f deploy/docker/worker.Dockerfile -t genfleet-worker .
# The same image runs on CPU (GENFLEET_DEVICE=cpu), as the compose file's `cpu` profile does with the
# embedded model.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/genfleet PATH=/opt/genfleet/bin:$PATH \
    HF_HOME=/models/huggingface HF_HUB_OFFLINE=0
# libgl1 and libglib2.0-0: OpenCV, which the invisible watermark (invisible-watermark) imports
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/genfleet
# torch first, from PyTorch's own index for this CUDA; then genfleet with the worker extra
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /app
COPY pyproject.toml README.md ./
COPY genfleet genfleet
COPY shared shared
COPY api api
COPY workers workers
RUN pip install ".[worker]" \
    && useradd --uid 10001 --create-home --shell /usr/sbin/nologin genfleet \
    && mkdir -p /models && chown genfleet /models

USER 10001
VOLUME ["/models"]
EXPOSE 9101
CMD ["genfleet", "worker"]
