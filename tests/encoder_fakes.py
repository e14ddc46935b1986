"""Test doubles around a real encoder."""


class CountingEncoder:
    """Delegates to a real encoder and counts the images it embeds."""

    def __init__(self, encoder):
        self.encoder, self.images = encoder, 0

    def encode_image(self, images):
        self.images += images.shape[0]
        return self.encoder.encode_image(images)

    def __getattr__(self, name):
        return getattr(self.encoder, name)
