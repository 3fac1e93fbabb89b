"""Data sources: COCO 2014 captions and the built-in captioned-shapes generator, as Records."""
