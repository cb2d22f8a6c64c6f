# syntax=docker/dockerfile:1
# The gateway and the worker run this one image (docs/operations.md, "Deploying with Compose").

# -- build: the package and its pinned dependencies in a virtualenv ----------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY aggregator/ aggregator/
COPY connectors/ connectors/
COPY vault/ vault/
COPY migrations/ migrations/
RUN python -m venv /opt/aggregator \
 && /opt/aggregator/bin/pip install --constraint constraints.txt . \
 && cp -r migrations "$(/opt/aggregator/bin/python -I -c 'import aggregator, os; print(os.path.dirname(aggregator.__file__))')/migrations"

# -- run: the virtualenv only, as an unprivileged user ------------------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 aggregator \
 && useradd --system --uid 10001 --gid aggregator --home-dir /var/lib/aggregator \
            --create-home --shell /usr/sbin/nologin aggregator
COPY --from=build /opt/aggregator /opt/aggregator
COPY deploy/entrypoint.sh /usr/local/bin/aggregator-entrypoint
ENV PATH=/opt/aggregator/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    AGGREGATOR_DATA_DIR=/var/lib/aggregator
USER aggregator
WORKDIR /var/lib/aggregator
ENTRYPOINT ["/usr/local/bin/aggregator-entrypoint"]
CMD ["aggregator", "--help"]
