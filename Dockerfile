# berth's container image, from local files only: `scripts/build-image` stages the release
# binary and the C libraries it links into target/image/berth, then runs
# `docker build -t berth .` on this file. No base image: nothing is pulled.
#
#   docker run -p 127.0.0.1:7420:7420 -v berth-data:/var/lib/berth berth \
#     serve --listen 0.0.0.0:7420 --auth --bootstrap-token-file /run/secrets/admin.token
#   docker run -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" berth agent --server http://HOST:7420
FROM scratch
COPY target/image/berth/ /
COPY --chown=65534:65534 target/image/berth/var/lib/berth /var/lib/berth
# Not root: the data directory belongs to nobody; the agent joins the socket's group instead.
USER 65534:65534
ENV BERTH_DATA_DIR=/var/lib/berth
VOLUME /var/lib/berth
# HTTP, xDS, DNS.
EXPOSE 7420 7421 8600/tcp 8600/udp
ENTRYPOINT ["/usr/bin/berth"]
CMD ["serve", "--listen", "0.0.0.0:7420", "--auth"]
