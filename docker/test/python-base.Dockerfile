# Local stand-in for python:3.11-slim-bookworm, for machines that cannot pull it (tests/docker_stack.py
# builds it only then). Like the official image: Debian bookworm with CPython built from source in
# /usr/local. Here the Debian part is a debootstrap rootfs (DEBIAN_IMAGE, with the shared libraries
# CPython links to) and the CPython is the host's own bookworm build, copied into the context as
# python/ by tests/docker_stack.py. Debian's own python3.11 (3.11.2) is too old for the project's
# pins: soupsieve 4.1.2, for one, needs Python >= 3.11.5.
ARG DEBIAN_IMAGE
FROM ${DEBIAN_IMAGE}
COPY python/ /usr/local/
ENV LANG=C.UTF-8
# Fail here, not in the textclf build, if a module misses a library or venv cannot bootstrap pip.
RUN ldconfig \
 && python3 -c "import bz2, ctypes, lzma, readline, sqlite3, ssl, uuid, zlib, venv; print('python', __import__('sys').version)" \
 && python3 -m venv /tmp/probe && /tmp/probe/bin/pip --version && rm -rf /tmp/probe
CMD ["python3"]
