import os
import tempfile

script_path = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
data_path = os.environ.get("A1111_STUB_DATA", tempfile.gettempdir())
models_path = os.path.join(data_path, "models")
