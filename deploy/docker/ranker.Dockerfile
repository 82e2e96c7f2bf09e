# The ranker image: `rankserve ranker` with the core dependencies only (no TensorFlow).
# Build from the repository root: docker build -f deploy/docker/ranker.Dockerfile -t IMAGE .
# Stage 1 builds the wheel and installs it into a virtual environment; the final stage copies
# only that environment, so no compiler, pip cache or source tree ships.
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/rankserve
COPY pyproject.toml README.md ./
COPY protos ./protos
COPY ranker ./ranker
COPY server ./server
COPY demo ./demo
RUN /opt/rankserve/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/rankserve/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/rankserve/bin/pip install --no-cache-dir /wheels/rankserve-*.whl

FROM python:3.11.11-slim-bookworm
RUN groupadd --gid 10001 rankserve \
 && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin rankserve
COPY --from=build /opt/rankserve /opt/rankserve
ENV PATH=/opt/rankserve/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 8080 9090
ENTRYPOINT ["rankserve"]
CMD ["ranker", "--help"]
