# The code location of attribution_pipeline as a container: Dagster's gRPC code server
# (`dagster code-server start`), the image the webserver and daemon load the definitions from and
# that the run launcher (K8sRunLauncher, DockerRunLauncher) starts each run in. deploy/README.md
# says how to run it. It holds no secret: the database URLs, DAGSTER_POSTGRES_URL and the webhook
# URL come from the environment (or ATTRIBUTION_DB_URL_FILE) of the container at run time.
#
# Not built on the machine it was written on (no container daemon there): build it with
#   docker build -t attribution-pipeline:0.1.0 .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/attribution

# The exact versions of requirements.lock (the lock the tests ran with) constrain the install.
COPY pyproject.toml requirements.lock README.md ./
COPY attribution_pipeline ./attribution_pipeline
RUN pip install -c requirements.lock . \
    && rm -rf /root/.cache

# Dagster's instance (PostgreSQL through DAGSTER_POSTGRES_URL; the Helm chart mounts its own in
# its place), and the folders the pipeline writes: ATTRIBUTION_FRAMES_DIR and ATTRIBUTION_EXPORT_DIR
# should name a volume every worker shares (deploy/README.md).
COPY deploy/dagster.yaml /opt/dagster/dagster_home/dagster.yaml
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/attribution attribution \
    && mkdir -p /data/attribution \
    && chown -R attribution:attribution /data/attribution /opt/dagster/dagster_home

ENV DAGSTER_HOME=/opt/dagster/dagster_home \
    ATTRIBUTION_HOME=/data/attribution

USER 10001:10001
EXPOSE 4000

HEALTHCHECK --interval=30s --timeout=10s --start-period=60s \
    CMD ["dagster", "api", "grpc-health-check", "-p", "4000"]

CMD ["dagster", "code-server", "start", "-m", "attribution_pipeline.definitions", "-h", "0.0.0.0", "-p", "4000"]
