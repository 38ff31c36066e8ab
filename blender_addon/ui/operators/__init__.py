"""One operator per module; each class is listed in ui.registration.CLASSES."""
