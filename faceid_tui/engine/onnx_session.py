"""ONNX as faceid uses it: torch modules exported with a dynamic batch axis, and ONNX Runtime
sessions with one deliberate thread count and no spinning.

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


def export_dynamic_batch(module, example_shape: tuple[int, ...], input_name: str,
                         output_name: str, opset: int) -> bytes:
    """``module`` (a torch module) as serialised ONNX through torch's ``torch.export``-based
    exporter, its first axis dynamic."""
    import torch

    from faceid_tui.errors import ModelError

    batch = torch.export.Dim("batch", min=1, max=65536)
    with torch.inference_mode():
        program = torch.onnx.export(
            module, (torch.zeros(*example_shape),), dynamo=True, opset_version=opset,
            input_names=[input_name], output_names=[output_name],
            dynamic_shapes=({0: batch},), external_data=False, verbose=False,
        )
    if program is None:  # pragma: no cover - only the legacy exporter returns None
        raise ModelError("torch.onnx.export returned no program")
    return program.model_proto.SerializeToString()
