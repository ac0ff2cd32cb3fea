"""Shared helpers for the benchmarks: best of N after one warm-up call, and a one-thread LiteRT
interpreter pinned to a kernel path (the peer every TFLite benchmark compares against)."""
import time

# The LiteRT kernel paths the benchmarks time (the reference kernels are not a deployment peer).
RESOLVERS = {"builtin": "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "xnnpack": "AUTO"}


def best_time(fn, repeats=10):
    fn()  # warm up (page faults, caches, lazy initialization)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def litert_interpreter(flatbuffer, kernels, x):
    """(interpreter, call): a one-thread LiteRT interpreter on `flatbuffer` with path `kernels`'
    op resolver, prepared for x's shape, and a call that sets x, invokes and returns the output. Time
    `call`, or `interpreter.invoke` after one call for the kernels without the copies."""
    from ai_edge_litert import interpreter as litert
    it = litert.Interpreter(model_content=flatbuffer, num_threads=1,
                            experimental_op_resolver_type=getattr(litert.OpResolverType, RESOLVERS[kernels]))
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], x.shape)
    it.allocate_tensors()
    out = it.get_output_details()[0]["index"]

    def call():
        it.set_tensor(inp["index"], x)
        it.invoke()
        return it.get_tensor(out)
    return it, call
