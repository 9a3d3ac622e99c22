# Draws the example pictures for `damo predict` (run once with Debian python3-pil; the
# files are committed). Items face left, as in Fashion-MNIST.
from PIL import Image, ImageDraw, ImageFilter
import os, random
OUT = os.path.dirname(os.path.abspath(__file__)) + "/"
random.seed(3)
# 1. a sneaker drawn by hand (side view), dark on white paper, 240 x 150
im = Image.new("RGB", (240, 150), (250, 248, 243))
d = ImageDraw.Draw(im)
d.rounded_rectangle([12, 104, 228, 126], radius=10, fill=(235, 235, 235), outline=(60, 60, 60), width=3)  # sole
upper = [(20, 104), (24, 62), (40, 42), (78, 40), (92, 58), (130, 74), (180, 82), (214, 92), (226, 104)]
d.polygon(upper, fill=(70, 90, 150), outline=(30, 30, 40))
for i in range(5):  # laces
    x = 86 + i * 14
    d.line([(x, 58 + i * 4), (x + 10, 70 + i * 3)], fill=(240, 240, 240), width=3)
d.arc([60, 70, 200, 130], start=200, end=330, fill=(240, 240, 240), width=4)  # stripe
im = im.filter(ImageFilter.GaussianBlur(0.8))
im = im.transpose(Image.FLIP_LEFT_RIGHT)
im.save(OUT + "sneaker_drawn.png")
# 2. an ankle boot, grey on a light background, tall picture 180 x 220
im = Image.new("L", (180, 220), 236)
d = ImageDraw.Draw(im)
boot = [(40, 30), (100, 30), (104, 120), (150, 150), (165, 170), (165, 190), (30, 190), (32, 120)]
d.polygon(boot, fill=(58))
d.rectangle([30, 180, 165, 196], fill=30)
d.rectangle([36, 196, 60, 204], fill=30)
im = im.transpose(Image.FLIP_LEFT_RIGHT)
im.save(OUT + "ankle_boot_drawn.png")
# 3. a handbag photographed-like: a colour JPEG with noise, 300 x 260
im = Image.new("RGB", (300, 260), (225, 222, 215))
d = ImageDraw.Draw(im)
d.arc([90, 20, 210, 150], start=180, end=360, fill=(90, 50, 30), width=10)  # handle
d.rounded_rectangle([50, 85, 250, 230], radius=18, fill=(120, 70, 40), outline=(70, 40, 20), width=4)
d.line([(50, 130), (250, 130)], fill=(80, 45, 25), width=3)
px = im.load()
for y in range(260):
    for x in range(300):
        r, g, b = px[x, y]
        n = random.randint(-10, 10)
        px[x, y] = (max(0, min(255, r + n)), max(0, min(255, g + n)), max(0, min(255, b + n)))
im.save(OUT + "bag_photo.jpg", quality=85)
