"""ONNX Runtime sessions as faceid runs them: one deliberate thread count, no spinning.

Every network on onnxruntime (FaceNet, dlib's ResNet descriptor, dlib's MMOD detector) is
opened with :func:`session_options`, so they share one thread policy.
"""

from __future__ import annotations


def session_options(threads: int):  # -> onnxruntime.SessionOptions
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # One deliberate thread count: ORT's default (every core, spinning) collapses when the
    # detector's processes or other jobs share the cores.
    options.intra_op_num_threads = threads
    # Idle pool threads sleep instead of spinning: on shared cores spinning took time from
    # the thread doing the work (benchmarks/embed_speed.py, 2 threads on 2 busy cores).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options
