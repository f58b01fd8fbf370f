"""Deployment: export to ONNX (:func:`export_onnx`) and run the exported model in onnxruntime
behind the segmentor interface (:class:`ORTSegmentor`). Importing this package imports neither
``onnx`` nor ``onnxruntime``; the functions that need them import them."""
from .deploy_segmentor import DeploySegmentor
from .onnx_export import ONNX_OPSET, export_onnx, verify_onnx
from .ort_segmentor import ORTSegmentor

__all__ = ['DeploySegmentor', 'ONNX_OPSET', 'ORTSegmentor', 'export_onnx', 'verify_onnx']
