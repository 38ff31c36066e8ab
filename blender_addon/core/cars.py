"""Procedural car shapes: dimensions and body profiles from (body type, shape seed). No bpy.

A car identity is (body, shape_seed). `car_shape` draws every continuous parameter (length,
width, height, wheelbase, overhangs, wheel size, bonnet/belt/deck heights, windscreen and rear
rake, cabin position, plan-view taper, tumblehome …) around per-type means with a generator
seeded by the identity, so the same identity always gives the same car and different seeds
give visibly different cars. The Blender builder (`blender/cars.py`) only turns the profiles
computed here into meshes, so the geometry rules (wheels inside their arches, nothing below
the ground) are tested here without Blender.

Frame: metres, car centred at the origin on the ground (z = 0), z up, front towards -y,
x to the car's left when seen from the front camera … i.e. x is lateral. Positions along the
car are given as `s`, the distance from the front bumper (y = s - length / 2).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import asdict, dataclass

from .errors import CarprobeError
from .schema import BODY_TYPES

# Per-type means. rear: "notch" (separate boot, sloping rear glass onto a deck),
# "hatch" (rear glass down to the tail), "cab" (pickup: short cab, open bed behind).
_MEANS: dict[str, dict] = {
    "sedan": dict(length=4.75, width=1.83, height=1.45, wb=0.59, fo=0.47, r=0.325, ww=0.225, clr=0.15,
                  nose=0.68, bonnet=0.90, belt=0.97, deck=0.99, ws=27.0, rr=25.0, cabin=0.22, rear="notch",
                  deck_len=0.52),
    "hatchback": dict(length=4.15, width=1.78, height=1.47, wb=0.62, fo=0.54, r=0.31, ww=0.205, clr=0.15,
                      nose=0.68, bonnet=0.88, belt=0.95, deck=0.95, ws=29.0, rr=58.0, cabin=0.20, rear="hatch",
                      setback=0.10),
    "suv": dict(length=4.65, width=1.90, height=1.72, wb=0.60, fo=0.50, r=0.37, ww=0.235, clr=0.21,
                nose=0.90, bonnet=1.08, belt=1.12, deck=1.12, ws=33.0, rr=64.0, cabin=0.20, rear="hatch",
                setback=0.08),
    "coupe": dict(length=4.50, width=1.85, height=1.30, wb=0.59, fo=0.51, r=0.335, ww=0.245, clr=0.12,
                  nose=0.60, bonnet=0.80, belt=0.88, deck=0.92, ws=24.0, rr=19.0, cabin=0.30, rear="notch",
                  deck_len=0.38),
    "wagon": dict(length=4.85, width=1.84, height=1.50, wb=0.59, fo=0.48, r=0.325, ww=0.225, clr=0.15,
                  nose=0.68, bonnet=0.90, belt=0.97, deck=0.97, ws=27.0, rr=72.0, cabin=0.22, rear="hatch",
                  setback=0.07),
    "van": dict(length=5.10, width=1.98, height=1.98, wb=0.63, fo=0.50, r=0.34, ww=0.225, clr=0.17,
                nose=0.82, bonnet=1.05, belt=1.10, deck=1.10, ws=50.0, rr=86.0, cabin=0.03, rear="hatch",
                setback=0.03),
    "pickup": dict(length=5.30, width=1.95, height=1.85, wb=0.64, fo=0.50, r=0.38, ww=0.25, clr=0.23,
                   nose=0.95, bonnet=1.15, belt=1.20, deck=1.20, ws=35.0, rr=84.0, cabin=0.15, rear="cab",
                   cab=0.62),
}

ARCH_GAP = 0.06  # clearance between tyre and wheel-arch edge (m)
NOSE_LEN = 0.28  # length over which nose and tail round off (m)


@dataclass(frozen=True)
class CarShape:
    """Every dimension of one procedural car (metres, degrees). See the module docstring."""

    body: str
    shape_seed: int
    length: float
    width: float
    height: float
    wheelbase: float
    front_overhang: float
    rear_overhang: float
    wheel_radius: float
    wheel_width: float
    track: float               # distance between left and right wheel centres
    ground_clearance: float
    bumper_height: float       # bottom of the front/rear faces
    nose_height: float         # top of the front face
    bonnet_height: float       # bonnet at the windscreen base
    belt_height: float         # window sill line
    deck_height: float         # rear deck / tail top
    windscreen_base: float     # s of the windscreen base
    roof_front: float          # s where the roof starts
    roof_rear: float           # s where the roof ends
    rear_glass_base: float     # s where the rear glass (or cab back) meets the body
    windscreen_rake: float     # degrees from horizontal
    rear_rake: float           # degrees from horizontal
    b_pillar: float            # s of the B pillar centre
    roof_crown: float          # rise of the roof centre over its edges
    plan_taper: float          # width lost at the nose/tail corners (fraction of half width)
    tumblehome: float          # inset of the side glass at the sill from the body side
    roof_inset: float          # further inset of the roof rail from the sill
    bed: bool                  # pickup: open load bed behind the cab
    rear: str                  # "notch" | "hatch" | "cab"

    @property
    def car_id(self) -> str:
        return car_id(self.body, self.shape_seed)

    @property
    def front_axle(self) -> float:
        return self.front_overhang

    @property
    def rear_axle(self) -> float:
        return self.front_overhang + self.wheelbase

    @property
    def arch_radius(self) -> float:
        return self.wheel_radius + ARCH_GAP

    def y(self, s: float) -> float:
        """World y of a position s along the car (s = 0 at the front)."""
        return s - self.length / 2.0

    def wheel_centres(self) -> list[tuple[float, float, float]]:
        """(x, y, z) of the four wheel centres: front-left, front-right, rear-left, rear-right."""
        out = []
        for s in (self.front_axle, self.rear_axle):
            for side in (1.0, -1.0):
                out.append((side * self.track / 2.0, self.y(s), self.wheel_radius))
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["car_id"] = self.car_id
        return d


def car_id(body: str, shape_seed: int) -> str:
    """Stable identity label, e.g. ``suv-0003`` (``model-<stem>`` is made by the scene builder)."""
    return f"{body}-{int(shape_seed):04d}"


_HALTON_PRIMES = (2, 3, 5, 7, 11)


def _halton(i: int, base: int) -> float:
    """i-th element (i >= 1) of the van der Corput sequence in `base`."""
    f, out = 1.0, 0.0
    while i > 0:
        f /= base
        out += f * (i % base)
        i //= base
    return out


def _rng(body: str, seed: int) -> random.Random:
    # A stable integer from the identity (never Python's salted hash()).
    digest = hashlib.sha256(f"carprobe-car:{body}:{int(seed)}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def car_shape(body: str, shape_seed: int = 0, overrides: dict | None = None) -> CarShape:
    """The car of identity (body, shape_seed), with optional overrides.

    overrides: ``length``, ``width``, ``height`` (metres, 0 or absent = from the identity) and
    ``wheel_scale`` (1 = the identity's wheels); keys may also be spelled ``car.length`` etc.
    Raises CarprobeError for an unknown body or overrides no car of that type can satisfy.
    """
    if body not in _MEANS:
        raise CarprobeError(f"car.body: unknown procedural body {body!r}; allowed: {', '.join(BODY_TYPES)}")
    if int(shape_seed) < 0:
        raise CarprobeError(f"car.shape_seed: {shape_seed!r} must be >= 0")
    m = _MEANS[body]
    rng = _rng(body, shape_seed)

    # The main proportions follow a Halton sequence over the seed (shifted per body type), not
    # independent draws: any 50 consecutive seeds are spread over the whole range, so no two
    # identities come out nearly alike. The rest is drawn from the seeded generator.
    body_rng = _rng(body, -1)  # the shift depends on the body type only, never on the seed
    shift = [body_rng.random() for _ in _HALTON_PRIMES]
    spread = {k: (_halton(int(shape_seed) + 1, p) + shift[i]) % 1.0 for i, (k, p) in
              enumerate(zip(("length", "height", "r", "ws", "width"), _HALTON_PRIMES))}

    def jit(mean: float, rel: float, key: str | None = None) -> float:  # ±rel around the mean, relative
        u = spread[key] if key else rng.random()
        return mean * (1.0 + rel * (2.0 * u - 1.0))

    def add(mean: float, spread: float) -> float:  # uniform ±spread around the mean, absolute
        return mean + rng.uniform(-spread, spread)

    # Draw order is fixed: adding a parameter later must append, to keep old identities.
    length = jit(m["length"], 0.08, "length")
    width = jit(m["width"], 0.035, "width")
    height = jit(m["height"], 0.06, "height")
    wb = length * add(m["wb"], 0.025)
    fo = (length - wb) * add(m["fo"], 0.06)
    r = jit(m["r"], 0.09, "r")
    ww = jit(m["ww"], 0.08)
    clr = jit(m["clr"], 0.12)
    nose = jit(m["nose"], 0.06)
    bonnet = jit(m["bonnet"], 0.04)
    belt = max(bonnet + 0.02, jit(m["belt"], 0.04))
    deck = jit(m["deck"], 0.04)
    ws = m["ws"] + 4.0 * (2.0 * spread["ws"] - 1.0)
    rr = add(m["rr"], 5.0)
    cabin = add(m["cabin"], 0.06)
    crown = rng.uniform(0.02, 0.06)
    taper = rng.uniform(0.06, 0.16)
    tumble = rng.uniform(0.05, 0.10)
    roof_inset = rng.uniform(0.10, 0.17)
    bpil = rng.uniform(0.40, 0.55)
    rear_extra = rng.uniform(-1.0, 1.0)  # deck length / setback / cab length variation

    shape = dict(length=length, width=width, height=height, wheelbase=wb, front_overhang=fo,
                 rear_overhang=length - wb - fo, wheel_radius=r, wheel_width=ww, clr=clr, nose=nose,
                 bonnet=bonnet, belt=belt, deck=deck, ws=ws, rr=rr, cabin=cabin, crown=crown, taper=taper,
                 tumble=tumble, roof_inset=roof_inset, bpil=bpil, rear_extra=rear_extra)
    ov = _norm_overrides(overrides)
    shape = _apply_overrides(body, shape, ov)
    car = _derive(body, int(shape_seed), m, shape)
    # Bigger wheels (or a lower body) lift the body: ride height rises instead of the tyres
    # piercing the wings. An explicit height the wheels cannot fit under is an error.
    lift = MIN_ARCH_SKIN - min_arch_skin(car)
    if lift > 1e-9:
        if ov.get("height", 0.0) > 0:
            raise CarprobeError(
                f"car.height: {ov['height']:g} m is too low for a {body} with wheels of radius "
                f"{car.wheel_radius:.2f} m; allowed >= {car.height + lift:.2f} m (or 0 = from identity)")
        for key in ("height", "nose", "bonnet", "belt", "deck", "clr"):
            shape[key] += lift
        car = _derive(body, int(shape_seed), m, shape)
    return car


MIN_ARCH_SKIN = 0.10  # body above the top of each wheel arch (m)


def min_arch_skin(shape: CarShape) -> float:
    """Smallest height of body left above the wheel-arch cut-outs (top line minus arch)."""
    worst = math.inf
    for axle in (shape.front_axle, shape.rear_axle):
        for i in range(-10, 11):
            s = axle + shape.arch_radius * i / 10.0
            worst = min(worst, body_top(shape, s) - body_bottom(shape, s))
    return worst


def _norm_overrides(overrides: dict | None) -> dict:
    out = {}
    for k, v in (overrides or {}).items():
        key = k.split(".", 1)[1] if k.startswith("car.") else k
        if key in ("length", "width", "height", "wheel_scale"):
            out[key] = float(v)
    return out


def _apply_overrides(body: str, d: dict, ov: dict) -> dict:
    d = dict(d)
    L = ov.get("length", 0.0)
    if L and L > 0:
        k = L / d["length"]
        for key in ("length", "wheelbase", "front_overhang", "rear_overhang"):
            d[key] *= k
    W = ov.get("width", 0.0)
    if W and W > 0:
        d["width"] = W
    ws = ov.get("wheel_scale", 1.0)
    if ws != 1.0:
        if not 0.2 <= ws <= 3.0:
            raise CarprobeError(f"car.wheel_scale: {ws} out of range; allowed 0.5 .. 1.5")
        d["wheel_radius"] *= ws
        d["wheel_width"] *= ws
    H = ov.get("height", 0.0)
    if H and H > 0:
        # Body heights scale with the overall height; wheels and ground clearance keep their size.
        k = H / d["height"]
        for key in ("height", "nose", "bonnet", "belt", "deck"):
            d[key] *= k
    if d["front_overhang"] < d["wheel_radius"] + ARCH_GAP + 0.12 or \
            d["rear_overhang"] < d["wheel_radius"] + ARCH_GAP + 0.12:
        raise CarprobeError(
            f"car.length: {d['length']:.2f} m (car.length={L:g}, car.wheel_scale={ws:g}) is too short for a "
            f"{body}: the wheels would stick out of the body; allowed car.length >= "
            f"{d['length'] * (d['wheel_radius'] + ARCH_GAP + 0.12) / min(d['front_overhang'], d['rear_overhang']):.2f} m "
            f"or a smaller car.wheel_scale")
    return d


def _derive(body: str, seed: int, m: dict, d: dict) -> CarShape:
    L, W, H = d["length"], d["width"], d["height"]
    fo, wb = d["front_overhang"], d["wheelbase"]
    r = d["wheel_radius"]
    belt = d["belt"]
    bonnet = min(d["bonnet"], belt - 0.01)
    # The windscreen base sits a fraction of the wheelbase behind the front axle (vans: near it).
    s_a = fo + d["cabin"] * wb
    s_a = max(s_a, NOSE_LEN + 0.3, fo + r + ARCH_GAP + 0.05 if body != "van" else NOSE_LEN + 0.3)
    rise = H - belt
    s_rf = s_a + rise / math.tan(math.radians(d["ws"]))
    rear = m["rear"]
    if rear == "notch":
        deck_len = m["deck_len"] * (1.0 + 0.25 * d["rear_extra"])
        s_c = L - deck_len
        deck = max(d["deck"], belt)
        s_rr = s_c - (H - deck) / math.tan(math.radians(d["rr"]))
    elif rear == "hatch":
        setback = max(0.02, m["setback"] * (1.0 + 0.5 * d["rear_extra"]))
        s_c = L - setback
        deck = belt
        s_rr = s_c - rise / math.tan(math.radians(d["rr"]))
    else:  # cab
        s_c = fo + wb * (m["cab"] + 0.04 * d["rear_extra"])
        deck = belt
        s_rr = s_c - rise / math.tan(math.radians(d["rr"]))
    # Keep a roof of at least 0.5 m: a very raked screen gives up some rake, not the roof.
    s_rr = min(s_rr, s_c - 0.02)
    if s_rr - s_rf < 0.5:
        s_rf = max(s_a + 0.25, s_rr - 0.5)
        s_rr = max(s_rr, s_rf + 0.3)
        s_c = max(s_c, s_rr + 0.02)
    ws_rake = math.degrees(math.atan2(rise, s_rf - s_a))
    rear_rake = math.degrees(math.atan2(H - deck, max(1e-6, s_c - s_rr)))
    b_pillar = s_rf + d["bpil"] * (s_rr - s_rf) * (0.85 if rear == "cab" else 1.0)
    half = W / 2.0
    tumble = d["tumble"]
    return CarShape(
        body=body, shape_seed=seed, length=L, width=W, height=H, wheelbase=wb, front_overhang=fo,
        rear_overhang=L - wb - fo, wheel_radius=r, wheel_width=d["wheel_width"],
        track=2.0 * (half - 0.02 - d["wheel_width"] / 2.0), ground_clearance=d["clr"],
        bumper_height=d["clr"] + 0.12, nose_height=d["nose"], bonnet_height=bonnet, belt_height=belt,
        deck_height=deck, windscreen_base=s_a, roof_front=s_rf, roof_rear=s_rr, rear_glass_base=s_c,
        windscreen_rake=ws_rake, rear_rake=rear_rake, b_pillar=b_pillar, roof_crown=d["crown"],
        plan_taper=d["taper"], tumblehome=tumble, roof_inset=d["roof_inset"], bed=(rear == "cab"),
        rear=rear,
    )


# --- profiles the mesh builder lofts ------------------------------------------------------------

def _ease(u: float) -> float:
    """Quarter-ellipse 0 → 1 (u in 0..1): the rounding of nose and tail."""
    u = min(1.0, max(0.0, u))
    return math.sqrt(max(0.0, 1.0 - (1.0 - u) ** 2))


def body_top(shape: CarShape, s: float) -> float:
    """Height of the body's top line (bonnet, sill line, deck) at s, before the crown."""
    L = shape.length
    s_a, s_c = shape.windscreen_base, shape.rear_glass_base
    bonnet_front = shape.nose_height + 0.55 * (shape.bonnet_height - shape.nose_height)
    if s <= s_a:
        if s <= NOSE_LEN:
            return shape.nose_height + (bonnet_front - shape.nose_height) * _ease(s / NOSE_LEN)
        return bonnet_front + (shape.bonnet_height - bonnet_front) * (s - NOSE_LEN) / max(1e-6, s_a - NOSE_LEN)
    if s <= s_c:
        return shape.bonnet_height + (shape.belt_height - shape.bonnet_height) * (s - s_a) / max(1e-6, s_c - s_a)
    tail_top = shape.deck_height - 0.06
    tail_start = max(s_c, L - NOSE_LEN)
    if s <= tail_start:
        return shape.belt_height + (shape.deck_height - shape.belt_height) * (s - s_c) / max(1e-6, tail_start - s_c)
    return tail_top + (shape.deck_height - tail_top) * _ease((L - s) / max(1e-6, L - tail_start))


def body_bottom(shape: CarShape, s: float, side: int = 0) -> float:
    """Height of the body's underside at s, including the wheel-arch cut-outs.

    side: at an arch edge the underside jumps; -1 takes the value just before s, +1 just after.
    """
    L, clr, bumper = shape.length, shape.ground_clearance, shape.bumper_height
    ra = shape.arch_radius
    for axle in (shape.front_axle, shape.rear_axle):
        ds = s - axle
        inside = abs(ds) < ra or (abs(ds) == ra and side != 0 and (ds > 0) == (side < 0))
        if inside:
            return shape.wheel_radius + math.sqrt(max(0.0, ra * ra - ds * ds))
    if s < NOSE_LEN:
        return clr + (bumper - clr) * (1.0 - _ease(s / NOSE_LEN))
    if s > L - NOSE_LEN:
        return clr + (bumper - clr) * (1.0 - _ease((L - s) / NOSE_LEN))
    return clr


def half_width(shape: CarShape, s: float) -> float:
    """Half width of the lower body at s (rounded corners in plan view)."""
    half = shape.width / 2.0
    L = shape.length
    u = min(s, L - s) / NOSE_LEN
    if u >= 1.0:
        return half
    return half * (1.0 - shape.plan_taper * (1.0 - _ease(u)))


def body_stations(shape: CarShape) -> list[tuple[float, float, float, float]]:
    """Lower-body loft stations (s, bottom z, top z, half width), front to back.

    Arch edges appear twice (bottom jumps from the sill to the wheel centre height), so the
    loft gets vertical arch ends.
    """
    L = shape.length
    ss: list[tuple[float, int]] = []
    for i in range(6):  # nose
        ss.append((NOSE_LEN * (1 - math.cos(math.pi / 2 * i / 5)), 0))
    for axle in (shape.front_axle, shape.rear_axle):
        ra = shape.arch_radius
        ss.append((axle - ra, -1))
        ss.append((axle - ra, 1))
        for i in range(1, 12):
            ss.append((axle - ra * math.cos(math.pi * i / 12), 0))
        ss.append((axle + ra, -1))
        ss.append((axle + ra, 1))
    for s in (shape.windscreen_base, shape.roof_front, shape.b_pillar, shape.roof_rear, shape.rear_glass_base,
              (shape.front_axle + shape.rear_axle) / 2):
        ss.append((s, 0))
    for i in range(6):  # tail
        ss.append((L - NOSE_LEN * (1 - math.cos(math.pi / 2 * i / 5)), 0))
    ss.sort()
    out: list[tuple[float, float, float, float]] = []
    for s, side in ss:
        st = (s, body_bottom(shape, s, side), body_top(shape, s), half_width(shape, s))
        if out and abs(out[-1][0] - s) < 1e-4 and abs(out[-1][1] - st[1]) < 1e-4:
            continue  # duplicate station
        out.append(st)
    return out


def roof_z(shape: CarShape, s: float) -> float:
    """Roof-rail height at s between roof_front and roof_rear (slightly arched)."""
    mid = (shape.roof_front + shape.roof_rear) / 2.0
    half = max(1e-6, (shape.roof_rear - shape.roof_front) / 2.0)
    t = (s - mid) / half
    return shape.height - shape.roof_crown - 0.03 * t * t


def greenhouse_stations(shape: CarShape) -> list[tuple[float, float, float, float, float, str]]:
    """Cabin (glass house) loft stations: (s, sill z, rail z, sill half width, rail half width, side).

    side: what the side band *behind* this station is: "glass" (a side window) or "pillar".
    The first band is the windscreen, the last the rear glass (or pickup cab back).
    """
    s_a, s_rf, s_rr, s_c = shape.windscreen_base, shape.roof_front, shape.roof_rear, shape.rear_glass_base
    pw = 0.09  # pillar width
    # Side-band breakpoints: windows from the A pillar to the B pillar and from B to C/D.
    if shape.rear == "notch":
        keys = [(s_a, "glass"), (s_rf, "glass"), (shape.b_pillar - pw / 2, "pillar"),
                (shape.b_pillar + pw / 2, "glass"), (s_rr - 0.02, "pillar"), (s_rr, "pillar"), (s_c, "pillar")]
    elif shape.rear == "cab":
        keys = [(s_a, "glass"), (s_rf, "glass"), (shape.b_pillar - pw / 2, "pillar"),
                (shape.b_pillar + pw / 2, "glass"), (s_rr - 0.12, "pillar"), (s_rr, "pillar"), (s_c, "pillar")]
    else:
        d_start = s_rr - 0.10 - 0.08 * (shape.height - shape.belt_height)
        keys = [(s_a, "glass"), (s_rf, "glass"), (shape.b_pillar - pw / 2, "pillar"),
                (shape.b_pillar + pw / 2, "glass"), (max(d_start, shape.b_pillar + 0.3), "pillar"),
                (s_rr, "pillar"), (s_c, "pillar")]
    # Drop window/pillar breaks that fall outside the roof (short cabins): keep s increasing.
    keys = keys[:2] + [k for k in keys[2:-2] if s_rf + 0.05 < k[0] < s_rr - 0.01] + keys[-2:]
    out = []
    for s, side in keys:
        if s <= s_rf:
            t = (s - s_a) / max(1e-6, s_rf - s_a)
            rail = body_top(shape, s_a) + 0.03 + t * (roof_z(shape, s_rf) - body_top(shape, s_a) - 0.03)
        elif s >= s_rr:
            t = (s_c - s) / max(1e-6, s_c - s_rr)
            base = body_top(shape, s_c) + 0.03
            rail = base + t * (roof_z(shape, s_rr) - base)
        else:
            rail = roof_z(shape, s)
        sill = body_top(shape, s) - 0.02
        w_sill = half_width(shape, s) - shape.tumblehome
        # Near the ends of the glass house the rail is low: pull it in less there.
        frac = max(0.0, min(1.0, (rail - sill) / max(1e-6, shape.height - shape.belt_height)))
        w_rail = w_sill - shape.roof_inset * frac
        out.append((s, sill, rail, w_sill, w_rail, side))
    return out
