# One image for every process of the stack (teacher, api, worker): `recmimic` is the entrypoint
# and the compose file picks the subcommand.
#
#   docker build -t recmimic .                      # CPU torch (teacher, api, CPU worker)
#   docker build -t recmimic-gpu \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .  # GPU worker
#
# torch is installed first, from the index TORCH_INDEX names, so that `pip install .` finds its
# `torch>=2.2` requirement already met and never pulls the default (CUDA) wheels from PyPI. The
# CPU index keeps the image small; the GPU worker needs a CUDA build instead: pick the cuXYZ
# index matching the host's driver (https://download.pytorch.org/whl/ lists them) and run the
# container with the NVIDIA container toolkit (docker-compose.yml reserves the GPU).

FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0

WORKDIR /src
COPY pyproject.toml README.md ./
COPY seqrec seqrec
COPY teacher_mock teacher_mock
COPY extractor extractor
COPY distill distill
COPY adaptive adaptive
COPY service service
RUN pip install . && rm -rf /src

# Runs unprivileged. /data (the service's home: database, jobs, students; dataset cache) and
# /models (teacher artifacts) exist and belong to that user, so named volumes mounted there start
# out writable by it.
RUN useradd --create-home --uid 10001 recmimic \
    && mkdir -p /data /models \
    && chown recmimic:recmimic /data /models
USER recmimic
WORKDIR /data
ENV RECMIMIC_HOME=/data \
    XDG_CACHE_HOME=/data/cache

ENTRYPOINT ["recmimic"]
CMD ["--help"]
