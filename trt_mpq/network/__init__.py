"""Stage 1, the network: load and normalise an FP32 ONNX model, infer its tensors once, split it into units."""
