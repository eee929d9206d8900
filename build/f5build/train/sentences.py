"""English lines in the chat reader's register, made from templates with a fixed seed.

The embedded model is trained on what the service reads aloud: greetings, thanks for gifts and
follows, numbers and times, names, questions and short reactions. Lines come from templates filled
from word lists, so thousands of distinct sentences follow from a few hundred words; the same seed
always gives the same lines. Single words and short phrases are made too: they are where a
flow-matching TTS first learns which part of the text each stretch of audio speaks (a curriculum
starts on them, see `train.data`).
"""

from __future__ import annotations

import random

NAMES = [
    "Alice",
    "Bob",
    "Carol",
    "David",
    "Emma",
    "Frank",
    "Grace",
    "Henry",
    "Ivy",
    "Jack",
    "Kate",
    "Leo",
    "Mia",
    "Noah",
    "Olivia",
    "Paul",
    "Quinn",
    "Rose",
    "Sam",
    "Tina",
    "Uma",
    "Victor",
    "Wendy",
    "Xavier",
    "Yara",
    "Zoe",
    "Ben",
    "Chloe",
    "Dan",
    "Ella",
    "Finn",
    "Gina",
    "Hugo",
    "Iris",
    "Jake",
    "Lily",
    "Max",
    "Nina",
    "Oscar",
    "Penny",
    "Ray",
    "Sara",
    "Tom",
    "Vera",
    "Will",
    "Amy",
    "Ruby",
    "Eric",
    "Luna",
    "Owen",
]
ITEMS = [
    "rocket",
    "rose",
    "heart",
    "star",
    "crown",
    "coffee",
    "cake",
    "balloon",
    "rainbow",
    "diamond",
    "trophy",
    "gift box",
    "lucky cat",
    "firework",
    "guitar",
    "panda",
    "unicorn",
    "sports car",
    "teddy bear",
    "ice cream",
]
TOPICS = [
    "the weather",
    "this new game",
    "my keyboard",
    "the music",
    "our project",
    "the recipe",
    "this song",
    "the next level",
    "the camera",
    "your question",
    "the schedule",
    "my cat",
    "the garden",
    "this puzzle",
    "the stream",
    "the update",
    "the weekend",
    "the new map",
    "the build",
    "the giveaway",
]
ADJ = [
    "great",
    "awesome",
    "amazing",
    "lovely",
    "funny",
    "cool",
    "nice",
    "wonderful",
    "perfect",
    "beautiful",
    "strange",
    "quick",
    "quiet",
    "busy",
]
VERBS = [
    "play",
    "try",
    "build",
    "cook",
    "read",
    "watch",
    "fix",
    "draw",
    "sing",
    "start",
    "finish",
    "check",
    "test",
    "open",
    "share",
]
OBJECTS = [
    "a new song",
    "the last round",
    "some soup",
    "this book",
    "the trailer",
    "the bug",
    "a small map",
    "the menu",
    "the settings",
    "a short story",
    "the first chapter",
    "the big box",
    "a quick game",
    "the old radio",
    "the final boss",
]
PLACES = [
    "Berlin",
    "Tokyo",
    "London",
    "Paris",
    "Sydney",
    "Toronto",
    "Madrid",
    "Seoul",
    "Chicago",
    "Dublin",
    "Oslo",
    "Boston",
    "Lisbon",
    "Denver",
]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
SMALL = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "twenty",
    "thirty",
    "fifty",
    "a hundred",
]
TIMES = ["seven", "eight", "nine", "ten", "noon", "midnight", "half past six", "a quarter to nine"]
REACTIONS = [
    "Wow!",
    "No way!",
    "Oh no!",
    "Nice one!",
    "Good job!",
    "Thank you!",
    "Welcome!",
    "Hello!",
    "Let's go!",
    "Well done!",
    "Really?",
    "Okay.",
    "Sure thing.",
    "See you!",
    "Good night!",
    "Amazing!",
    "Hi there!",
    "Oops.",
    "Yes!",
    "Of course.",
]

TEMPLATES = (
    "Hi {name}, welcome to the stream!",
    "Thanks for the {item}, {name}!",
    "{name} just sent {count} {item}s, thank you so much!",
    "Welcome back, {name}. How was your {day}?",
    "Good evening everyone, {name} is here!",
    "Thank you for the follow, {name}.",
    "{name} asks if we can {verb} {object} next.",
    "Can you hear me clearly now, {name}?",
    "Let me know in the chat what you think about {topic}.",
    "Today we are going to {verb} {object}.",
    "I think {topic} is really {adj}.",
    "{name} says hello from {place}!",
    "We start again on {day} at {time}.",
    "That was {adj}, thanks {name}!",
    "Is it raining in {place} today, {name}?",
    "Don't forget to {verb} {object} before {day}.",
    "Only {count} more minutes until the giveaway!",
    "{name} and {name2} are playing together tonight.",
    "What do you think about {topic}, {name}?",
    "Please be nice to each other in the chat.",
    "The score is {count} to {count2} right now.",
    "Thank you {name}, and welcome {name2}!",
    "See you on {day}, {name}. Have a {adj} night!",
    "I will {verb} {object} after this round.",
    "{name} wants to know when {topic} comes out.",
    "Big thanks to {name} for {count} months of support!",
    "Let's {verb} {object} together.",
    "Where are you watching from, {name}?",
    "It is {time} here in {place}.",
    "Who wants to {verb} {object} with me?",
)


def _fill(template: str, rng: random.Random) -> str:
    name, name2 = rng.sample(NAMES, 2)
    count, count2 = rng.sample(SMALL, 2)
    return template.format(
        name=name,
        name2=name2,
        item=rng.choice(ITEMS),
        count=count,
        count2=count2,
        day=rng.choice(DAYS),
        verb=rng.choice(VERBS),
        object=rng.choice(OBJECTS),
        topic=rng.choice(TOPICS),
        adj=rng.choice(ADJ),
        place=rng.choice(PLACES),
        time=rng.choice(TIMES),
    )


def sentences(count: int, seed: int) -> list[str]:
    """`count` distinct template sentences, in a seed-fixed order."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    for _ in range(count * 50):
        if len(seen) == count:
            break
        seen.setdefault(_fill(rng.choice(TEMPLATES), rng))
    if len(seen) < count:
        raise ValueError(f"the templates make only {len(seen)} distinct sentences, {count} were asked for")
    return list(seen)


def phrases(count: int, seed: int) -> list[str]:
    """Single words and short phrases of at most seven words (the curriculum's first stage), distinct, seed-fixed."""
    rng = random.Random(seed)
    words = [*NAMES, *ADJ, *VERBS, *PLACES, *DAYS, *SMALL, *ITEMS]
    seen: dict[str, None] = {}
    makers = (
        lambda: rng.choice(words).capitalize(),
        lambda: rng.choice(REACTIONS),
        lambda: f"Hi {rng.choice(NAMES)}!",
        lambda: f"Thanks, {rng.choice(NAMES)}.",
        lambda: f"{rng.choice(ADJ).capitalize()} {rng.choice(ITEMS)}.",
        lambda: f"{rng.choice(VERBS).capitalize()} {rng.choice(OBJECTS)}.",
        lambda: f"{rng.choice(SMALL).capitalize()} {rng.choice(ITEMS)}s.",
        lambda: f"On {rng.choice(DAYS)}.",
        lambda: f"In {rng.choice(PLACES)}.",
        lambda: f"{rng.choice(NAMES)} and {rng.choice(NAMES)}.",
        lambda: f"See you, {rng.choice(NAMES)}!",
        lambda: f"Good {rng.choice(('morning', 'evening', 'night', 'luck', 'game'))}, {rng.choice(NAMES)}.",
        lambda: f"{rng.choice(ADJ).capitalize()}, {rng.choice(NAMES)}!",
        lambda: f"At {rng.choice(TIMES)} on {rng.choice(DAYS)}.",
        lambda: f"{rng.choice(SMALL).capitalize()} {rng.choice(('minutes', 'hours', 'days', 'points', 'friends'))}.",
        lambda: f"{rng.choice(NAMES)} from {rng.choice(PLACES)}.",
    )
    for _ in range(count * 50):
        if len(seen) == count:
            break
        seen.setdefault(rng.choice(makers)())
    if len(seen) < count:
        raise ValueError(f"the phrase makers give only {len(seen)} distinct phrases, {count} were asked for")
    return list(seen)
