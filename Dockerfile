# dropserve image: one image runs the training job and the server.
#   docker build -t dropserve .                                      # online, CPU torch
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t dropserve:cuda .
#   deploy/wheelhouse.sh && docker build --build-arg OFFLINE=1 -t dropserve .   # air-gapped
# Behind a TLS-intercepting proxy, hand pip its CA bundle as a BuildKit secret (never a layer):
#   DOCKER_BUILDKIT=1 docker build --secret id=pip_ca,src=/etc/ssl/certs/ca-certificates.crt ...
ARG BASE_IMAGE=python:3.11-slim
# The build stage compiles models/_kernels.c: an image with a C compiler and Python's headers, and
# Python at the same path as in BASE_IMAGE (deploy/base-image.sh prints such a pair).
ARG BUILD_IMAGE=python:3.11

FROM ${BUILD_IMAGE} AS build
# CPU wheels by default; any PyTorch index (cu128, rocm...) swaps the build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# 1: install only from deploy/wheelhouse/ (filled by deploy/wheelhouse.sh), no network.
ARG OFFLINE=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY models models
COPY training training
COPY service service
COPY client client
# Bind mounts and secrets leave no layer behind: the wheelhouse and the CA never reach the image.
# Trimmed afterwards: C++ headers, CMake files and C++ test binaries serve no Python runtime
# (about 200 MB); the bytecode stays, so containers start without recompiling torch.
# The whole context is bind-mounted (not deploy/wheelhouse itself), so a clone without a wheelhouse
# still builds online.
RUN --mount=type=bind,target=/context \
    --mount=type=secret,id=pip_ca \
    set -eu; \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi; \
    if [ "$OFFLINE" = 1 ]; then pip_source="--no-index --find-links /context/deploy/wheelhouse"; \
    else pip_source="--extra-index-url $TORCH_INDEX_URL"; fi; \
    python -m venv /opt/venv; \
    /opt/venv/bin/pip install --quiet $pip_source --constraint constraints.txt .; \
    /opt/venv/bin/pip uninstall --quiet --yes setuptools wheel 2>/dev/null || true; \
    torch=/opt/venv/lib/python3.11/site-packages/torch; \
    rm -rf "$torch"/include "$torch"/share/cmake "$torch"/test "$torch"/bin/test_* "$torch"/bin/*Test \
           "$torch"/bin/protoc*

FROM ${BASE_IMAGE}
# What `make docker-build` prunes when a new build leaves this one untagged.
LABEL org.opencontainers.image.title="dropserve"
# A fixed uid so volumes and Kubernetes securityContext can name it.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin dropserve \
    && mkdir -p /models /data && chown dropserve:dropserve /models /data
COPY --from=build /opt/venv /opt/venv
# PATH spelled out: an imported base (debootstrap) sets none to extend.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLBACKEND=Agg \
    DROPSERVE_HOST=0.0.0.0 \
    DROPSERVE_PORT=8000 \
    DROPSERVE_MODEL_REPOSITORY=/models \
    DROPSERVE_DATA_CACHE=/data
WORKDIR /home/dropserve
USER dropserve
# /models: the model repository (training writes it, the server reads it); /data: dataset cache.
VOLUME ["/models", "/data"]
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
# Serve by default; train with: docker run ... dropserve python -m training --artifacts /models
CMD ["python", "-m", "service"]
