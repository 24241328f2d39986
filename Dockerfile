# The hub's one image: `hub serve`, `hub run ingest`, `hub run land` and `hub apply` are
# its commands (see docker-compose.yml). No secret is baked in: every server address and
# password comes from the environment at run time.
#
#   docker build -t civic-hub .

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# .dockerignore keeps the virtualenv, local state, caches, tests and .env out of this.
COPY . .
RUN python -m venv /opt/hub \
    && /opt/hub/bin/pip install . \
    && /opt/hub/bin/hub --help >/dev/null

FROM ${PYTHON_IMAGE}
# uid/gid 1883 is the `mosquitto` user of eclipse-mosquitto: `hub broker-init` writes the broker's
# first accounts file (owner-only) into the shared `mosquitto-dynsec` volume, mounted here at
# /mosquitto-dynsec, and the broker must be able to read it and write it. Change both together.
ARG HUB_UID=1883
ARG HUB_GID=1883
ENV PATH=/opt/hub/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HUB_STATE_DIR=/var/lib/hub
RUN groupadd --system --gid "${HUB_GID}" hub \
    && useradd --system --uid "${HUB_UID}" --gid hub --home-dir /var/lib/hub --no-create-home \
       --shell /usr/sbin/nologin hub \
    && mkdir -p /var/lib/hub /mosquitto-dynsec /dashboards \
    && chown hub:hub /var/lib/hub /mosquitto-dynsec /dashboards \
    && chmod 0700 /mosquitto-dynsec
COPY --from=build /opt/hub /opt/hub
USER hub
WORKDIR /var/lib/hub
EXPOSE 8081
CMD ["hub", "--help"]
