from . import (data_preprocessors, decoders, detectors, fusers, heads, necks,  # noqa: F401
               task_modules, view_transforms)
