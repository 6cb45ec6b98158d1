# syntax=docker/dockerfile:1
#
# Postern in a container. Build:   docker build -t postern .
# Run with compose (see README "Docker"): docker compose up -d
#
# Layout inside the image
#   /app                      the code (owned by root, read-only for the relay)
#   /var/lib/postern          WORKDIR; the relay's relative default paths land here
#   /var/lib/postern/data     VOLUME: queue (data/queue.db, data/messages/) and users (data/users.json)
#   /var/lib/postern/certs    VOLUME: server.crt/server.key; development ones (with ca.crt) are
#                             generated here on first start because tls.cert/tls.key keep their
#                             default relative values (certs/server.crt, certs/server.key).
#                             Mount real certificates here instead to use them.
#
# Both stages use the same Node.js image: better-sqlite3 is compiled in the
# first and must run on the same Node ABI in the second. Node 24 is an LTS
# that better-sqlite3 12 supports (../shared/LIBRARIES.md: ship 22 or 24).

FROM node:24-bookworm-slim AS build
WORKDIR /app
# Toolchain for node-gyp (better-sqlite3 is built from source, not downloaded).
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
# Exactly the locked versions; npm ci's prepare step compiles src/ to dist/
# (npm run build), then the development dependencies are dropped: the image
# runs plain JavaScript.
RUN npm ci --build-from-source --no-audit --no-fund \
 && npm prune --omit=dev --no-audit --no-fund \
 && node -e "new (require('better-sqlite3'))(':memory:').close()" \
 && npm cache clean --force

FROM node:24-bookworm-slim
ENV NODE_ENV=production
# An unprivileged user with fixed ids (numeric USER below, so runtimes that
# require a non-root user can verify it); volume ownership is set here so
# named volumes start out writable by it.
RUN groupadd --system --gid 10025 postern \
 && useradd --system --uid 10025 --gid postern --home-dir /var/lib/postern --no-create-home --shell /usr/sbin/nologin postern \
 && mkdir -p /var/lib/postern/data /var/lib/postern/certs \
 && chown -R postern:postern /var/lib/postern \
 && ln -s /app/bin/postern.js /usr/local/bin/postern
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY package.json package-lock.json ./
COPY --chmod=0755 bin ./bin
COPY --from=build /app/dist ./dist

# Listeners on unprivileged ports, reachable from outside the container (the
# host maps 25/587/465 onto them); HTTP (admin API, /metrics, /healthz,
# /readyz) on 8025. Queue and users under the data volume.
ENV POSTERN_LISTENERS_RELAY_HOST=0.0.0.0 \
    POSTERN_LISTENERS_RELAY_PORT=2525 \
    POSTERN_LISTENERS_SUBMISSION_HOST=0.0.0.0 \
    POSTERN_LISTENERS_SUBMISSION_PORT=2587 \
    POSTERN_LISTENERS_SUBMISSIONS_HOST=0.0.0.0 \
    POSTERN_LISTENERS_SUBMISSIONS_PORT=2465 \
    POSTERN_HTTP_HOST=0.0.0.0 \
    POSTERN_HTTP_PORT=8025 \
    POSTERN_QUEUE_PATH=/var/lib/postern/data/queue.db \
    POSTERN_RELAY_USERS=/var/lib/postern/data/users.json

WORKDIR /var/lib/postern
VOLUME ["/var/lib/postern/data", "/var/lib/postern/certs"]
EXPOSE 2525 2587 2465 8025
USER 10025:10025

# `postern health` asks the HTTP listener for /healthz and /readyz; exit 0 or 1.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
  CMD ["/app/bin/postern.js", "health"]

# SIGTERM (docker stop) lets deliveries in flight finish and exits 0.
STOPSIGNAL SIGTERM
CMD ["/app/bin/postern.js", "serve"]
