from huggingface_inference_toolkit.serialization.audio_utils import Audioer  # noqa: F401
from huggingface_inference_toolkit.serialization.image_utils import Imager  # noqa: F401
from huggingface_inference_toolkit.serialization.json_utils import Jsoner  # noqa: F401
