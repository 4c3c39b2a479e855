# etcd for deploy/compose.yaml, from Debian's etcd-server binary (staged by scripts/build-image
# into target/image/etcd with the libraries it links). No base image: nothing is pulled.
FROM scratch
COPY target/image/etcd/ /
VOLUME /var/lib/etcd
EXPOSE 2379 2380
ENTRYPOINT ["/usr/bin/etcd"]
