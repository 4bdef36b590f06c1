"""Reading a GIF back for the tests: its frames and their durations, with Pillow."""

from PIL import Image, ImageSequence


def gif_frames(path):
    """``[(frame as an RGB image, duration in ms)]``. Pillow stores a frame identical to the one before as a
    longer frame, so count durations, not frames, to know how many frames were written."""
    with Image.open(path) as gif:
        return [(frame.convert("RGB").copy(), frame.info["duration"])
                for frame in ImageSequence.Iterator(gif)]
