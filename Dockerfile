# CUDA image serving the MONAI Label app (`ldct serve`); the models in models/ are baked in.
# Build: docker build -t ldct .
# Run:   docker run --gpus all -p 8000:8000 -v STUDIES:/data/studies -v SITE:/data/site-models \
#          -v AUTH:/data/auth -v READER_STUDIES:/data/reader-studies ldct
# Every route but /health needs a token; the first start prints the admin token (docker logs).
# More: docker exec CONTAINER ldct token add NAME --role radiologist. Put TLS in front (README).
# torch's CUDA 13 wheels bring their own CUDA libraries: the base image only provides the
# driver plumbing of the NVIDIA container runtime.
FROM nvidia/cuda:13.0.0-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    VENV=/opt/ldct/venv

# Python 3.11 (the version the pinned set is checked on) comes from the deadsnakes PPA on 24.04;
# PPA packages have no stable version strings to pin.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends software-properties-common curl \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev gcc \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/ldct
# the pinned dependency set first, so code changes do not reinstall it
COPY requirements.txt ./
RUN python3.11 -m venv "$VENV" \
    && "$VENV/bin/pip" install --upgrade "pip<25" \
    && "$VENV/bin/pip" install -r requirements.txt

# the package is installed in place so that it finds apps/ and models/ beside it
COPY pyproject.toml README.md ./
COPY ldct ./ldct
COPY apps ./apps
COPY models ./models
RUN "$VENV/bin/pip" install --no-deps --no-build-isolation -e . \
    && useradd --create-home --uid 10001 ldct \
    && mkdir -p /data/studies /data/site-models /data/auth /data/reader-studies \
        apps/ldct_denoise/logs \
    && chown -R 10001:10001 /data apps/ldct_denoise/logs

USER 10001
# fine-tuned versions (POST /train/{model}), the token file and the reader studies with their
# scores go to volumes (kept when the container is recreated for an image update), the
# shipped models stay; binding 0.0.0.0 is refused without tokens
ENV PATH="/opt/ldct/venv/bin:$PATH" \
    LDCT_SITE_MODELS=/data/site-models \
    LDCT_AUTH_FILE=/data/auth/tokens.json \
    LDCT_STUDY_ROOT=/data/reader-studies
VOLUME ["/data/studies", "/data/site-models", "/data/auth", "/data/reader-studies"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/health"]
ENTRYPOINT ["ldct", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--studies", "/data/studies", "--preload"]
