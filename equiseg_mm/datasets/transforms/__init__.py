from .load_multi_modal_annotations import LoadMultiModalAnnotations
from .load_multi_modal_image_from_files import LoadMultiModalImageFromFiles
from .multi_modal_photo_metric_distortion import MultiModalPhotoMetricDistortion
from .simulate_sensor_failure import SimulateSensorFailure

__all__ = ['LoadMultiModalAnnotations', 'LoadMultiModalImageFromFiles',
           'MultiModalPhotoMetricDistortion', 'SimulateSensorFailure']
