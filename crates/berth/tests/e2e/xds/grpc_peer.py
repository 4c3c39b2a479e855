"""A proxyless gRPC peer for berth's xDS tests, on grpcio alone (no generated code).

serve NAME PORT: a server whose one method, /berth.Echo/Who, answers NAME.
call TARGET COUNT: COUNT calls on a channel to TARGET (xds:///S with GRPC_XDS_BOOTSTRAP set),
    one answer per line ("error: ..." for a failed call), then exits.
watch TARGET SECONDS: calls every 20 ms for SECONDS and prints "<ms since start> <answer>".
"""
import sys
import time
from concurrent import futures

import grpc

METHOD = "/berth.Echo/Who"


def serve(name, port):
    def who(request, context):
        return name.encode()

    handler = grpc.method_handlers_generic_handler(
        "berth.Echo",
        {"Who": grpc.unary_unary_rpc_method_handler(who)},
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("serving", flush=True)
    server.wait_for_termination()


def call(channel):
    who = channel.unary_unary(METHOD)
    try:
        return who(b"", timeout=5).decode()
    except grpc.RpcError as error:
        return f"error: {error.code().name}"


def main():
    mode = sys.argv[1]
    if mode == "serve":
        serve(sys.argv[2], int(sys.argv[3]))
    elif mode == "call":
        with grpc.insecure_channel(sys.argv[2]) as channel:
            for _ in range(int(sys.argv[3])):
                print(call(channel), flush=True)
    elif mode == "watch":
        with grpc.insecure_channel(sys.argv[2]) as channel:
            start = time.monotonic()
            while time.monotonic() - start < float(sys.argv[3]):
                answer = call(channel)
                print(f"{int((time.monotonic() - start) * 1000)} {answer}", flush=True)
                time.sleep(0.02)


if __name__ == "__main__":
    main()
