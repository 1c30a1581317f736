from . import necks, view_transforms  # noqa: F401
