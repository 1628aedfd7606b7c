"""Deterministic, lazy synthetic installations.

Installation number ``i`` (any integer in ``[-2**47, 2**47)``; the initial ones are ``0..N-1``,
ones added at the end continue upwards, ones added at the front go downwards) is a pure function of
``(seed, i)``, plus ``(version, updated_ms)`` for installations that were updated. Nothing is
stored per installation, so a million installations cost no memory up front.

The installation id is a UUID (version 4 layout) whose first 48 bits are a seeded Feistel
permutation of ``i``: ids look random, and ``index_of(id)`` inverts them in O(1) (then checks the
full id, so a made-up id never matches). Organization ids are plain hash-derived UUIDs.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone

_MASK24 = (1 << 24) - 1
_OFF = 1 << 47
_DAY_MS = 86_400_000
_LEVELS = ("VIEW", "REQUEST", "WRITE")
OTHER_PERMISSIONS = (
    "organization_members",
    "organization_projects",
    "organization_inventory",
    "organization_warehouse",
)
ORG_TYPES = ("projectProponent", "projectDeveloper", "marketParticipant", "validationBody", "other")

# (countryCode, city) — ISO 3166-1 alpha-2, cities in their own spelling (accents, CJK, RTL, Greek…)
_PLACES = (
    ("CR", "San José"), ("BR", "São Paulo"), ("DE", "München"), ("JP", "東京"), ("CN", "北京"),
    ("CO", "Bogotá"), ("IS", "Reykjavík"), ("US", "New York"), ("GB", "London"), ("IN", "Bengaluru"),
    ("KE", "Nairobi"), ("NO", "Tromsø"), ("FR", "Besançon"), ("ES", "A Coruña"), ("MX", "Ciudad de México"),
    ("PL", "Łódź"), ("TR", "İstanbul"), ("VN", "Hà Nội"), ("KR", "서울"), ("GR", "Αθήνα"),
    ("EG", "القاهرة"), ("IL", "תל אביב"), ("ZA", "Cape Town"), ("AU", "Sydney"), ("CA", "Montréal"),
    ("NL", "Utrecht"), ("SE", "Göteborg"), ("CH", "Zürich"), ("PE", "Cusco"), ("ID", "Jakarta"),
    ("PH", "Quezon City"), ("NG", "Lagos"), ("UG", "Kampala"), ("CL", "Valparaíso"), ("AR", "Córdoba"),
    ("PT", "Lisboa"), ("DK", "Aarhus"), ("FI", "Jyväskylä"), ("UY", "Montevideo"), ("GH", "Accra"),
    ("IS", "Akureyri"), ("CR", "Liberia"), ("US", "San Francisco"), ("DE", "Köln"), ("BR", "Belém"),
)
_PREFIXES = (
    "Green", "Verde", "Blue Carbon", "Terra", "Ñandú", "Selva", "Nordic", "Árbol", "Forêt", "Zürcher",
    "Mangrove", "Sahel", "Pacific", "Andes", "緑の", "サステナ", "绿色", "Ōkami", "Çevre", "Λευκή",
    "🌱 Seedling", "Kōwhai", "Wald", "Sólarorka", "Rainforest", "Highland", "Kilimanjaro", "Boreal",
    "Coral", "Puna", "Tierra Viva", "Øresund",
)
_CORES = (
    "Carbon", "Forestry", "Energy", "Reforestation", "Climate", "Offsets", "Biochar", "Renewables",
    "Conservation", "Soil", "Methane Capture", "Blue Ocean", "エナジー", "碳汇", "Énergie", "Energía",
    "Cookstoves", "Peatland", "Wind", "Solar", "Agroforestry", "Geothermal",
)
_SUFFIXES = (
    "Ltd.", "GmbH", "S.A.", "ehf.", "Inc.", "LLC", "AB", "S.A.S.", "Pty Ltd", "株式会社", "有限公司",
    "Cooperativa", "Trust", "Foundation", "🌍", "Partners", "", "", "", "",
)
_STREETS = (
    "Main Street", "Calle Mayor", "Rua Augusta", "Hauptstraße", "Laugavegur", "Avenida Central",
    "Kungsgatan", "Rue de la Paix", "銀座通り", "Nyerere Road", "Ulica Piotrkowska", "Strøget",
)
INDUSTRIES = (
    {"code": "A01", "name": "Crop and animal production"},
    {"code": "A02", "name": "Forestry and logging"},
    {"code": "C20", "name": "Manufacture of chemicals and chemical products"},
    {"code": "D35", "name": "Electricity, gas, steam and air conditioning supply"},
    {"code": "E38", "name": "Waste collection, treatment and disposal activities"},
    {"code": "K64", "name": "Financial service activities"},
    {"code": "M71", "name": "Architectural and engineering activities"},
)


_DAY_CACHE: dict[int, str] = {}
_HHMM = [f"{h:02d}:{m:02d}" for h in range(24) for m in range(60)]
_SS = [f"{x:02d}" for x in range(60)]
_MS = [f"{x:03d}" for x in range(1000)]


def iso_ms(ms: int) -> str:
    """Epoch milliseconds → ``2024-03-26T08:47:15.356Z``."""
    day, rest = divmod(int(ms), _DAY_MS)
    d = _DAY_CACHE.get(day)
    if d is None:
        t = time.gmtime(day * 86400)
        d = _DAY_CACHE[day] = f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}"
    sec, milli = divmod(rest, 1000)
    minute, sec = divmod(sec, 60)
    return f"{d}T{_HHMM[minute]}:{_SS[sec]}.{_MS[milli]}Z"


def parse_iso_ms(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1000)


def _uuid4_from(b: bytes) -> str:
    """16 bytes → UUID string with version 4 / RFC 4122 variant bits set."""
    h = b.hex()
    return f"{h[0:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[b[8] & 3]}{h[17:20]}-{h[20:32]}"


def seeded_uuid(seed: int, label: str) -> str:
    return _uuid4_from(hashlib.blake2b(f"icr-sim:{seed}:{label}".encode(), digest_size=16).digest())


_M48 = (1 << 48) - 1


def _needs_no_escape(text: str) -> bool:
    return json.dumps(text, ensure_ascii=False) == f'"{text}"'


# Pool strings are pasted into JSON text as they are; they must not need escaping.
assert all(_needs_no_escape(x) for pool in (_PREFIXES, _CORES, _SUFFIXES, _STREETS) for x in pool)
assert all(_needs_no_escape(c) for _, c in _PLACES)
_INDUSTRIES_JSON = tuple(json.dumps(x, ensure_ascii=False, separators=(",", ":")) for x in INDUSTRIES)
_TYPES_JSON = tuple(f'"{t}"' for t in ORG_TYPES)
_PLACES_JSON = tuple((f'"{c}"', f'"{city}"') for c, city in _PLACES)


class InstallationFactory:
    """Builds installation objects from ``(seed, index[, version, updated_ms])``.

    ``record_json`` renders the JSON text directly (fast path of the server); ``record`` is
    ``json.loads`` of it, so the served bytes and ``truth()`` can never disagree.
    """

    def __init__(self, seed: int, app_id: str, app_name_id: str, anchor_ms: int, history_days: int):
        self.seed = seed
        self.app_id = app_id
        self.app_name_id = app_name_id
        if not _needs_no_escape(app_id) or not _needs_no_escape(app_name_id):
            raise ValueError("app id / app name id must not need JSON escaping")
        self.anchor_ms = int(anchor_ms)
        self.span_ms = max(1, int(history_days) * _DAY_MS)
        self._key = hashlib.blake2b(f"icr-sim-data:{seed}".encode(), digest_size=32).digest()
        rk = hashlib.blake2b(b"permutation", key=self._key, digest_size=24).digest()
        self._k1 = int.from_bytes(rk[0:6], "little")
        self._a = int.from_bytes(rk[6:12], "little") | 1
        self._b = int.from_bytes(rk[12:18], "little") | 1
        self._ainv = pow(self._a, -1, 1 << 48)
        self._binv = pow(self._b, -1, 1 << 48)
        self._head = f'"appId":"{app_id}","appNameId":"{app_name_id}",'

    # -- ids -------------------------------------------------------------------------------
    def _permute(self, z: int) -> int:
        y = ((z ^ self._k1) * self._a) & _M48
        y ^= y >> 24
        y = (y * self._b) & _M48
        return y ^ (y >> 24)

    def _unpermute(self, y: int) -> int:
        y ^= y >> 24
        y = (y * self._binv) & _M48
        y ^= y >> 24
        return ((y * self._ainv) & _M48) ^ self._k1

    def _digest(self, i: int, version: int = 0) -> bytes:
        msg = i.to_bytes(8, "little", signed=True)
        if version:
            msg += version.to_bytes(4, "little")
        return hashlib.blake2b(msg, key=self._key, digest_size=64).digest()

    def installation_id(self, i: int, h: bytes | None = None) -> str:
        if h is None:
            h = self._digest(i)
        y = f"{self._permute(i + _OFF):012x}"
        t = h[0:10].hex()
        return f"{y[0:8]}-{y[8:12]}-4{t[0:3]}-{'89ab'[h[10] & 3]}{t[3:6]}-{t[6:18]}"

    def index_of(self, installation_id: str) -> int | None:
        """Index whose id is exactly ``installation_id``, else ``None`` (liveness not checked)."""
        if not isinstance(installation_id, str) or len(installation_id) != 36:
            return None
        try:
            y = int(installation_id[0:8] + installation_id[9:13], 16)
        except ValueError:
            return None
        i = self._unpermute(y) - _OFF
        return i if self.installation_id(i) == installation_id else None

    # -- records ---------------------------------------------------------------------------
    @staticmethod
    def _permissions(h: bytes, off: int) -> dict:
        perms = {"organization_info": "VIEW" if h[off] % 10 else "REQUEST"}
        mask = h[off + 1]
        for n, name in enumerate(OTHER_PERMISSIONS):
            if mask >> n & 1:
                perms[name] = _LEVELS[h[off + 2 + n] % 3]
        return perms

    @staticmethod
    def _name(h: bytes, off: int) -> str:
        p = _PREFIXES[h[off] % len(_PREFIXES)]
        c = _CORES[h[off + 1] % len(_CORES)]
        s = _SUFFIXES[h[off + 2] % len(_SUFFIXES)]
        return f"{p} {c} {s}".rstrip()

    def record(self, i: int, version: int = 0, updated_ms: int | None = None) -> dict:
        """The installation object for index ``i`` (a fresh dict)."""
        return json.loads(self.record_json(i, version, updated_ms))

    def record_json(self, i: int, version: int = 0, updated_ms: int | None = None) -> str:
        """The installation object for index ``i`` as compact JSON text (UTF-8 safe, not escaped)."""
        h = self._digest(i)
        iid = self.installation_id(i, h)
        org_id = _uuid4_from(h[11:27])
        anchor, span = self.anchor_ms, self.span_ms
        created = anchor - span + int.from_bytes(h[27:33], "little") % span
        if h[33] & 1:
            updated = created
        else:
            updated = created + int.from_bytes(h[34:38], "little") % max(1, anchor - created)
        org_created = created - int.from_bytes(h[38:41], "little") % (400 * 86400) * 1000 - h[41] * 7
        org_updated = org_created if h[42] & 1 else org_created + (created - org_created) // 2
        country, city = _PLACES_JSON[h[43] % len(_PLACES_JSON)]
        flags = h[44]
        if version:
            hv = self._digest(i, version)
            perms = self._permissions(hv, 0)
            if perms == self._permissions(h, 45):  # an update always changes the permissions
                if "organization_warehouse" in perms:
                    del perms["organization_warehouse"]
                else:
                    perms["organization_warehouse"] = "VIEW"
            name = self._name(hv, 6)
            if updated_ms is not None:
                updated = org_updated = max(int(updated_ms), updated)
        else:
            perms = self._permissions(h, 45)
            name = self._name(h, 51)
        perms_json = ",".join([f'"{k}":"{v}"' for k, v in perms.items()])
        zip_code = "" if flags & 1 else f"{int.from_bytes(h[54:57], 'little') % 100000:05d}"
        industries = "null" if flags & 2 else _INDUSTRIES_JSON[h[57] % len(_INDUSTRIES_JSON)]
        reg = "" if flags & 4 else f"{country[1:3]}-{int.from_bytes(h[58:62], 'little') % 10**8:08d}"
        address = "" if flags & 8 else f"{h[62] % 200 + 1} {_STREETS[h[63] % len(_STREETS)]}"
        website = "" if flags & 16 else f"https://www.org-{org_id[:8]}.example.org"
        logo = "" if flags & 32 else f"https://sandbox-files.carbonregistry.example/organizations/{org_id}/logo.png"
        city = '""' if flags & 64 and not flags & 1 else city
        public = "true" if h[62] % 5 else "false"
        return (
            f'{{"id":"{iid}",{self._head}"createdAt":"{iso_ms(created)}","updatedAt":"{iso_ms(updated)}",'
            f'"permissions":{{{perms_json}}},"organization":{{"id":"{org_id}",'
            f'"url":"undefined/organizations/{org_id}","zip":"{zip_code}","city":{city},"logo":"{logo}",'
            f'"type":{_TYPES_JSON[h[53] % 5]},"website":"{website}","fullName":"{name}","isPublic":{public},'
            f'"createdAt":"{iso_ms(org_created)}","updatedAt":"{iso_ms(org_updated)}","countryCode":{country},'
            f'"physicalAddress":"{address}","registrationNumber":"{reg}","organizationIndustries":{industries}}},'
            f'"accessTokensUrl":"undefined/app/installations/{iid}/accessTokens"}}'
        )
