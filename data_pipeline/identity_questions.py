"""Identity questions for refusal training, drawn from a small grammar rather than a list.

A model learns to decline *the request* (who is this, what is their name, is this <someone>, which
celebrity) only if the training questions vary in every slot: who is asked about, how, and which name
is put forward. A list of twenty questions and a few dozen names teaches those sentences; this grammar
writes thousands of phrasings, and the names are random syllables, so no name (and no name's tokens)
is special. The held-out probe (:data:`facellm.eval.identity.PROBE_QUESTIONS`) asks in phrasings and with
real names this grammar cannot produce (tested).
"""

from __future__ import annotations

import random
import re

SUBJECTS = ("this", "this person", "the person in this photo", "the person in the image", "this man",
            "this woman", "the person shown", "the person pictured", "the face in this photo",
            "the person in this picture", "the one in the photo")
POSSESSIVES = ("this person's", "his", "her", "their", "the person's", "this man's", "this woman's")
THINGS = ("face", "photo", "picture", "image", "portrait")

# {subj}, {poss}, {thing} and {name} are filled in; each group asks for identity in its own way
WHO = ("Who is {subj}?", "Who's {subj}?", "Who might {subj} be?", "Can you tell me who {subj} is?",
       "Do you know who {subj} is?", "Tell me who {subj} is.", "Any idea who {subj} is?", "I want to know who {subj} is.",
       "Please say who {subj} is.", "Who am I looking at?", "Whose photo is this?", "Whose picture is this?",
       "Who does this {thing} belong to?", "Who is shown in the image?", "Tell me whose {thing} this is.",
       "Whose {thing} am I looking at?", "Whose {thing} is shown here?", "Do you know whose {thing} this is?")
NAME = ("What is {poss} name?", "What's {poss} name?", "Tell me {poss} name.", "Give me {poss} name.",
        "Do you know {poss} name?", "Name {subj}.", "What is {subj} called?", "What do people call {subj}?",
        "Please give the name of {subj}.", "I need the name of {subj}.", "What name goes with this face?",
        "Can you give me {poss} full name?")
IDENTITY = ("What is {poss} identity?", "Reveal {poss} identity.", "Reveal the identity of {subj}.", "Identify {subj}.",
            "Can you identify {subj}?", "Please identify {subj}.", "Do you recognize {subj}?",
            "Recognize {subj} for me.", "Establish who {subj} is.", "Which person is this?",
            "I'd like to know {poss} identity.")
FAME = ("Is {subj} famous?", "Is {subj} a celebrity?", "Is {subj} someone famous?", "Which famous person is this?",
        "Which actor is this?", "Which singer is this?", "Which politician is this?", "Which athlete is this?",
        "Is {subj} a well-known celebrity?", "Is {subj} a famous actor?")
NAME_CHECK = ("Is this {name}?", "Is {subj} {name}?", "Could {subj} be {name}?", "Is that {name}?",
              "Do you think {subj} is {name}?", "Is this a photo of {name}?", "Am I looking at {name}?", "Is it {name}?",
              "Does this photo show {name}?", "This is {name}, isn't it?", "Are you sure this isn't {name}?",
              "Does {subj} look like {name}?")
FORMS = WHO + NAME + IDENTITY + FAME + NAME_CHECK

# Names are consonant-vowel syllables (optionally closed by n, r, s or l): varied enough to look like
# names from many languages, and unable to spell a name that starts with a vowel or holds a cluster
_CONSONANTS, _VOWELS, _CLOSERS = "bdfghjklmnprstvwyz", "aeiou", ("", "", "n", "r", "s", "l")
TITLES = ("", "", "", "Mr. ", "Ms. ", "Dr. ")
NAME_WORD = re.compile(rf"(?:[{_CONSONANTS}][{_VOWELS}])+[nrsl]?")


def random_name(rng: random.Random) -> str:
    """A made-up person's name: one or two words of two or three syllables, sometimes with a title."""
    def word() -> str:
        syllables = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(rng.randint(2, 3)))
        return (syllables + rng.choice(_CLOSERS)).capitalize()
    return rng.choice(TITLES) + " ".join(word() for _ in range(rng.choice((1, 2, 2, 2))))


def identity_question(rng: random.Random) -> str:
    form = rng.choice(FORMS)
    return form.format(subj=rng.choice(SUBJECTS), poss=rng.choice(POSSESSIVES), thing=rng.choice(THINGS),
                       name=random_name(rng))


def all_phrasings() -> set[str]:
    """Every question the grammar writes, with ``{name}`` left as the slot (for held-out checks)."""
    return {form.format(subj=s, poss=p, thing=t, name="{name}")
            for form in FORMS for s in SUBJECTS for p in POSSESSIVES for t in THINGS}
