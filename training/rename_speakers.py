"""Speaker renaming: a play's speakers get new names, scene by scene, drawn afresh every epoch.

A model trained on a fixed cast learns its names by heart and never needs to
look back for who is on stage; a new play's cast then costs it as much at the
fiftieth speech as at the first. Renamed scenes reward the other skill: spell a
name never seen, then repeat the names of the scene. Why, and what it measured:
docs/training.md ("Speaker renaming").
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict

SPEAKER_LINE = re.compile(r"^([A-Z][A-Z'-]+):$", re.M)  # a speaker named by one word in capitals: "PROSPERO:"
SPAN_CHARS = (2_000, 12_000)  # a "scene": plain text has no scene marks, so a stretch of about this many characters
ORDER = 2  # letters of context in the name generator: 3 mostly gives back the cast itself
NAME_LETTERS = (3, 12)
MAX_DRAWS = 1_000


class SpeakerRenamer:
    """`renamed(epoch)`: the text with each speaker renamed in a share `probability` of its scenes.

    Within a renamed scene one new name stands for each speaker, in the speaker
    lines and in the speeches (title case there: "Petruchio"). New names come
    from a letter model of the text's own speaker names, so they look like its
    cast without being any of it. The same (seed, epoch) always gives the same
    text, so every process and every resumed run sees the same epoch.
    """

    def __init__(self, text: str, probability: float, seed: int):
        self.text, self.probability, self.seed = text, probability, seed
        self.names = sorted(set(SPEAKER_LINE.findall(text)))
        self.known = set(self.names)
        self.next_letters: dict[str, Counter] = defaultdict(Counter)
        for name in self.names:
            padded = "^" * ORDER + name + "$"
            for end in range(ORDER, len(padded)):
                self.next_letters[padded[end - ORDER : end]][padded[end]] += 1

    def renamed(self, epoch: int) -> str:
        if not self.names or self.probability == 0:
            return self.text
        rng = random.Random(f"{self.seed}:{epoch}")
        parts, start = [], 0
        while start < len(self.text):
            end = self.text.find("\n\n", start + rng.randint(*SPAN_CHARS))
            end = len(self.text) if end < 0 else end
            scene = self.text[start:end]
            parts.append(self._rename_scene(scene, rng) if rng.random() < self.probability else scene)
            start = end
        return "".join(parts)

    def _rename_scene(self, scene: str, rng: random.Random) -> str:
        cast = sorted(set(SPEAKER_LINE.findall(scene)))
        if not cast:
            return scene
        new_names: dict[str, str] = {}
        for name in cast:
            new = self._new_name(rng)
            while new in new_names.values():
                new = self._new_name(rng)
            new_names[name] = new
            new_names[name.title()] = new.title()
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, sorted(new_names, key=len, reverse=True))) + r")\b")
        return pattern.sub(lambda match: new_names[match.group(1)], scene)

    def _new_name(self, rng: random.Random) -> str:
        for _ in range(MAX_DRAWS):
            context, name = "^" * ORDER, ""
            while True:
                letters = self.next_letters[context]
                letter = rng.choices(list(letters), weights=list(letters.values()))[0]
                if letter == "$":
                    break
                name += letter
                context = context[1:] + letter
            if NAME_LETTERS[0] <= len(name) <= NAME_LETTERS[1] and name not in self.known:
                return name
        # A cast too small to recombine ("ALICE", "BOB"): any string of its letters.
        letters = sorted(set("".join(self.names)))
        while True:
            name = "".join(rng.choices(letters, k=rng.randint(*NAME_LETTERS)))
            if name not in self.known:
                return name
