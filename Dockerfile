# The demo in a container: same commands as the Makefile (make demo / make test).
FROM python:3.11-slim
# gcc: LightFM (a peer) compiles its C extension at install.
RUN apt-get update && apt-get install -y --no-install-recommends make gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . /app
# `make install` creates .venv and installs the package with its pinned stack.
RUN make install PYTHON=python3.11
# The Debian index is the demo's real dataset: fetch it at run time (apt-get update), then demo.
CMD ["bash", "-c", "apt-get update && make demo PYTHON=python3.11"]
