"""Write the planted leakage/duplicate fixture: train, validation, test, benchmark JSONL and expected.json.

Run from anywhere: `python tests/assets/planted/make_planted.py`. The files are committed; this script says how
they were made and lists every planted item in expected.json by construction (not by running the detectors).
Clean items are distinct sentences on unrelated topics; planted items are edited copies of chosen clean ones.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

BASE = [
    (
        "How long should I boil an egg for a soft yolk?",
        "Boil it for about six minutes, then cool it in cold water so the yolk stays runny.",
    ),
    (
        "What is the capital city of Australia?",
        "The capital is Canberra, a planned city chosen as a compromise between Sydney and Melbourne.",
    ),
    (
        "Why do leaves change colour in autumn?",
        "Trees stop making chlorophyll as days shorten, so the yellow and orange pigments underneath become visible.",
    ),
    (
        "How do I reverse a list in Python?",
        "Call the reverse method to change the list in place, or slice it with a step of minus one to get a copy.",
    ),
    (
        "What causes the tides in the ocean?",
        "The gravity of the moon and, to a lesser degree, the sun pulls on the oceans and raises bulges of water.",
    ),
    (
        "Can you explain what compound interest means?",
        "Interest is added to the balance, and the next period earns interest on that larger balance as well.",
    ),
    (
        "Which planet has the most moons?",
        "Saturn currently holds the record, with well over one hundred confirmed moons orbiting it.",
    ),
    (
        "How often should I water a cactus indoors?",
        "Water it thoroughly every two or three weeks and let the soil dry out completely between waterings.",
    ),
    (
        "I am planning a week of hiking in the Scottish Highlands in early May with two friends who have little "
        "experience. Which waterproof clothing and navigation equipment should we pack for changeable weather?",
        "Bring breathable rain jackets and overtrousers, spare warm layers, a paper map with a compass, and learn to use them before you go.",
    ),
    (
        "What is the offside rule in football?",
        "An attacker is offside when nearer the goal line than both the ball and the second last defender as the ball is played.",
    ),
    (
        "Who painted the ceiling of the Sistine Chapel?",
        "Michelangelo painted it between 1508 and 1512, lying on scaffolding high above the chapel floor.",
    ),
    (
        "How does a bicycle stay upright while moving?",
        "Steering geometry and small corrections by the rider keep the wheels under the centre of mass.",
    ),
    (
        "What does a database index do?",
        "It keeps a sorted structure of column values so that queries can find rows without scanning the whole table.",
    ),
    (
        "Why is the sky blue during the day?",
        "Air molecules scatter short blue wavelengths of sunlight far more than red ones, so blue light reaches us from every direction.",
    ),
    (
        "How can I make bread rise faster?",
        "Keep the dough somewhere warm, use a little more yeast, and give it a short rest before shaping.",
    ),
    (
        "What is the difference between weather and climate?",
        "Weather is what the atmosphere does today, while climate describes the average pattern over decades.",
    ),
    (
        "Which instrument has eighty-eight keys?",
        "A standard modern piano has eighty-eight keys, fifty-two white and thirty-six black.",
    ),
    (
        "How do vaccines train the immune system?",
        "They show the body a harmless piece or copy of a germ, so it learns to recognise and fight the real one later.",
    ),
    ("What is a haiku?", "A short Japanese poem of three lines, traditionally with five, seven and five syllables."),
    (
        "How do I remove a red wine stain from a carpet?",
        "Blot it at once, pour on cold water or soda water, then dab with a paste of baking soda and vacuum when dry.",
    ),
    (
        "Why do cats purr?",
        "Cats purr when content, but also to calm themselves when stressed or hurt, using rapid twitches of the larynx muscles.",
    ),
    (
        "What is inflation in economics?",
        "It is the general rise of prices over time, which means each unit of money buys a little less.",
    ),
    (
        "How tall is Mount Everest?",
        "Its summit stands roughly 8,849 metres above sea level according to the most recent survey.",
    ),
    (
        "What is the purpose of a firewall?",
        "A firewall filters network traffic by rules, blocking connections that the owner has not allowed.",
    ),
    (
        "How many players are on a basketball team on court?",
        "Each side has five players on the court at a time, with substitutes waiting on the bench.",
    ),
    (
        "Why should I stretch after running?",
        "Gentle stretching while warm helps keep muscles flexible and may reduce stiffness the next day.",
    ),
    (
        "What language is spoken in Brazil?",
        "Portuguese is the official language, a legacy of colonisation by Portugal from the sixteenth century.",
    ),
    (
        "How does a refrigerator keep food cold?",
        "A pump circulates refrigerant that absorbs heat inside the cabinet and releases it through coils at the back.",
    ),
    (
        "What is photosynthesis?",
        "Plants use light energy to turn carbon dioxide and water into sugar, releasing oxygen as a by-product.",
    ),
    (
        "How do I centre a div with CSS?",
        "Make the parent a flex container and set both justify-content and align-items to center.",
    ),
    (
        "What are the primary colours of light?",
        "Red, green and blue light combine in different amounts to make every colour a screen shows.",
    ),
    (
        "Who wrote Pride and Prejudice?",
        "Jane Austen wrote it, and it was first published in 1813 after an earlier draft called First Impressions.",
    ),
    (
        "How can I sleep better at night?",
        "Keep a regular bedtime, avoid screens and caffeine late in the day, and keep the bedroom dark and cool.",
    ),
    (
        "What is a black hole?",
        "A region where gravity is so strong that nothing, not even light, can escape once it crosses the event horizon.",
    ),
    (
        "How do I prune a rose bush?",
        "In late winter cut out dead wood and thin crossing stems, then shorten the rest to an outward facing bud.",
    ),
    (
        "What does HTTP stand for?",
        "It stands for HyperText Transfer Protocol, the request and response protocol of the web.",
    ),
    (
        "Why do onions make us cry?",
        "Cutting them releases a sulfur compound that irritates the eyes, which respond by producing tears.",
    ),
    (
        "What is the longest river in Africa?",
        "The Nile is usually counted as the longest, flowing north for more than six thousand kilometres.",
    ),
    (
        "How should I store fresh herbs?",
        "Treat soft herbs like flowers in a glass of water, and wrap woody herbs in a damp towel in the fridge.",
    ),
    (
        "What is a prime number?",
        "A whole number greater than one whose only divisors are one and itself, such as seven or thirteen.",
    ),
    (
        "Summarise the history of the printing press in Europe.",
        "Johannes Gutenberg combined movable metal type with an oil based ink and a wooden screw press around 1450 in Mainz, "
        "and within fifty years printing shops had spread to more than two hundred European cities.",
    ),
    (
        "How do noise cancelling headphones work?",
        "Microphones pick up outside sound and the headphones play an inverted wave that cancels much of it.",
    ),
    (
        "What is the boiling point of water at sea level?",
        "Pure water boils at one hundred degrees Celsius, or two hundred and twelve Fahrenheit.",
    ),
    (
        "Why do we have leap years?",
        "A year is about a quarter day longer than 365 days, so an extra day every four years keeps the calendar aligned.",
    ),
    (
        "How do I tie a bowline knot?",
        "Make a small loop, pass the end up through it, around the standing part, and back down through the loop.",
    ),
    (
        "What is the speed of sound in air?",
        "At room temperature sound travels about 343 metres per second through dry air.",
    ),
    (
        "Why do birds migrate south in winter?",
        "They follow food supplies and milder weather, returning north in spring to breed where days are long.",
    ),
    (
        "How can I learn a new language quickly?",
        "Practise a little every day, speak with native speakers early, and learn the most common words first.",
    ),
    (
        "What does a mortgage broker do?",
        "A broker compares loans from many lenders and helps a buyer choose and apply for a suitable one.",
    ),
    (
        "Which gas do humans exhale the most of?",
        "Exhaled air is still mostly nitrogen, though it carries far more carbon dioxide than the air we breathe in.",
    ),
    (
        "How is glass made?",
        "Sand, soda ash and limestone are melted together in a furnace at very high heat and then cooled into shape.",
    ),
    (
        "What is the main function of red blood cells?",
        "They carry oxygen from the lungs to the tissues using the iron rich protein haemoglobin.",
    ),
    (
        "How do I change a flat tyre?",
        "Loosen the nuts, raise the car with the jack, swap in the spare wheel, and tighten the nuts in a star pattern.",
    ),
    (
        "What is a sonnet?",
        "A fourteen line poem with a fixed rhyme scheme, made famous in English by Shakespeare and Petrarch before him.",
    ),
    (
        "Why does ice float on water?",
        "Water expands as it freezes into a crystal lattice, so ice is less dense than the liquid around it.",
    ),
    (
        "What is the role of the United Nations?",
        "It gives countries a forum to keep peace, coordinate aid and agree on shared rules and goals.",
    ),
    (
        "How do I make a simple vinaigrette?",
        "Whisk three parts olive oil with one part vinegar, a spoon of mustard, salt and pepper.",
    ),
    (
        "What causes earthquakes?",
        "Stress builds up where tectonic plates meet, and the sudden slip along a fault releases it as seismic waves.",
    ),
    (
        "How many bones are in the adult human body?",
        "An adult skeleton usually has 206 bones, fewer than a baby because some fuse during growth.",
    ),
    (
        "What is machine learning?",
        "Programs learn patterns from example data instead of following rules written by hand.",
    ),
    (
        "Why do we see lightning before we hear thunder?",
        "Light travels almost a million times faster than sound, so the flash arrives long before the rumble.",
    ),
    (
        "How do I clean a cast iron pan?",
        "Rinse it with hot water, scrub off food with salt, dry it on the stove and rub in a thin layer of oil.",
    ),
    (
        "Describe how coral reefs are formed.",
        "Tiny coral polyps build skeletons of calcium carbonate that pile up over thousands of years, slowly growing into "
        "vast limestone reefs that shelter a quarter of all known marine species.",
    ),
    (
        "What is the tallest animal in the world?",
        "The giraffe, whose long neck lets adults reach leaves nearly six metres above the ground.",
    ),
    (
        "How does a solar panel make electricity?",
        "Light knocks electrons loose in layers of silicon, and the built in electric field drives them into a current.",
    ),
    (
        "What is the Great Barrier Reef?",
        "The largest coral reef system on Earth, stretching over two thousand kilometres along the coast of Queensland.",
    ),
    (
        "Why do we yawn?",
        "Nobody is completely sure, but yawning may cool the brain and it spreads between people socially.",
    ),
    (
        "What is a sourdough starter?",
        "A live culture of wild yeast and bacteria kept in flour and water, used to leaven bread without commercial yeast.",
    ),
    (
        "How do I write a good cover letter?",
        "Address it to a person, show how your experience fits the role, and keep it to one clear page.",
    ),
    (
        "What is the difference between a virus and a bacterium?",
        "Bacteria are living cells that can reproduce alone, while viruses need a host cell to copy themselves.",
    ),
    (
        "Why is the ocean salty?",
        "Rivers carry dissolved minerals from rocks into the sea, where they stay behind as water evaporates.",
    ),
    (
        "How do chess players castle?",
        "The king moves two squares toward a rook, and that rook jumps to the square the king crossed.",
    ),
    (
        "What is the function of the liver?",
        "The liver filters blood, stores energy as glycogen, and makes bile and many important proteins.",
    ),
    (
        "How do airplanes stay in the air?",
        "Wings are shaped and angled so that air flowing past them produces lift greater than the plane's weight.",
    ),
    (
        "What is a tsunami?",
        "A series of long ocean waves, usually set off by an undersea earthquake, that can flood coasts far away.",
    ),
]

BENCHMARK_CLEAN = [
    "Volcanoes erupt when pressure from molten rock and dissolved gases beneath the crust becomes greater than the rock above can hold.",
    "The violin has four strings tuned in fifths and is played with a bow strung with horsehair.",
    "Honey never really spoils because its low water content and acidity stop most microbes from growing.",
    "Marathon runners usually train for several months, slowly raising their weekly distance before the race.",
]


def pc(prompt: str, completion: str) -> dict[str, str]:
    return {"prompt": prompt, "completion": completion}


def text_of(item: tuple[str, str]) -> str:
    return f"{item[0]}\n\n{item[1]}"


def main() -> None:
    assert len(BASE) == 75 and len({p for p, _ in BASE}) == 75
    expected: dict = {"dedup": {"file": "train.jsonl", "duplicates": []}, "leaks": []}

    # train: BASE[0:45] plus edited copies of some of them (duplicates inside train)
    train = [pc(*item) for item in BASE[:45]]
    dups = [
        (
            "exact",
            3,
            pc(
                "  HOW do I reverse a list in   Python?",
                "Call the REVERSE method to change the list in place, or slice it with a step of minus one to get a copy",
            ),
        ),
        (
            "exact",
            10,
            pc(
                "who painted the ceiling of the sistine chapel",
                "michelangelo painted it between 1508 and 1512;  lying on scaffolding high above the chapel floor!",
            ),
        ),
        (
            "exact",
            20,
            pc(
                "Why do cats purr ??",
                "Cats purr when content , but also to calm themselves when stressed or hurt , using rapid twitches of the larynx muscles .",
            ),
        ),
        (
            "near",
            5,
            pc(
                "Can you explain what compound interest means?",
                "Interest is added to the balance, and the next month earns interest on that larger balance as well.",
            ),
        ),
        (
            "near",
            15,
            pc(
                "What is the difference between weather and climate?",
                "Weather is what the atmosphere does today, while climate describes the long average pattern over decades.",
            ),
        ),
        (
            "near",
            25,
            pc(
                "why should I stretch after running",
                "Gentle stretching while warm helps keep muscles flexible and may reduce stiffness the following day.",
            ),
        ),
        (
            "near",
            30,
            pc(
                "What are the primary colours of light?",
                "Red, green and blue light combine in varying amounts to make every colour a screen shows.",
            ),
        ),
        (
            "near",
            33,
            pc(
                "What is a black hole?",
                "A region where gravity is so strong that nothing, not even light, can escape after it crosses the event horizon.",
            ),
        ),
    ]
    # each duplicate goes a few lines after its original, so duplicates sit between clean lines
    for _, of, record in dups:
        train.insert(train.index(pc(*BASE[of])) + 4, record)
    for kind, of, record in dups:
        line, of_line = train.index(record) + 1, train.index(pc(*BASE[of])) + 1
        expected["dedup"]["duplicates"].append({"kind": kind, "line": line, "of": of_line})

    # validation: BASE[45:60] plus leaks from train
    validation = [pc(*item) for item in BASE[45:60]]
    leaks_val = [
        (
            "exact",
            1,
            pc(
                "what is the CAPITAL city of Australia",
                "The capital is Canberra,   a planned city chosen as a compromise between Sydney and Melbourne.",
            ),
        ),
        (
            "input-exact",
            2,
            pc("Why do leaves change colour in autumn?", "Cold nights break down the green pigment first."),
        ),
        (
            "near",
            7,
            pc(
                "How often should I water a cactus inside?",
                "Water it thoroughly every two or three weeks and let the soil dry out completely between waterings.",
            ),
        ),
        (
            "input-near",
            8,
            pc(
                "I am planning a week of hiking in the Scottish Highlands in late May with two friends who have little "
                "experience. Which waterproof clothing and navigation equipment should we pack for changeable weather?",
                "Hire a local guide for the first two days; guides know which paths flood and where the mobile signal ends.",
            ),
        ),
    ]
    for position, (_, _, record) in zip((3, 7, 11, 15), leaks_val, strict=True):
        validation.insert(position, record)
    for kind, of, record in leaks_val:
        line = validation.index(record) + 1
        a = f"train.jsonl:{train.index(pc(*BASE[of])) + 1}"
        expected["leaks"].append({"kind": kind, "a": a, "b": f"validation.jsonl:{line}"})

    # test: BASE[60:75] plus leaks from train and from validation
    test = [pc(*item) for item in BASE[60:75]]
    passage = BASE[40][1].split(", and within")[0]  # 25 words of the printing-press answer
    leaks_test = [
        ("exact", ("validation.jsonl", validation.index(pc(*BASE[46])) + 1), pc(BASE[46][0].upper(), BASE[46][1])),
        (
            "near",
            ("train.jsonl", train.index(pc(*BASE[11])) + 1),
            pc("How does a bike stay upright while moving?", BASE[11][1]),
        ),
        (
            "ngram",
            ("train.jsonl", train.index(pc(*BASE[40])) + 1),
            pc(
                "Write a short museum label for an early printed bible.",
                f"This book was made in a workshop like the one where {passage}. Visitors can compare its letters with "
                "a handwritten manuscript displayed in the next case.",
            ),
        ),
    ]
    for position, (_, _, record) in zip((2, 9, 13), leaks_test, strict=True):
        test.insert(position, record)
    for kind, (file, line), record in leaks_test:
        expected["leaks"].append({"kind": kind, "a": f"{file}:{line}", "b": f"test.jsonl:{test.index(record) + 1}"})

    # benchmark (text shape): clean texts, a verbatim copy of a train example, a passage of a test example
    coral = BASE[62][1].split(" that shelter")[0]  # 25 words of the coral answer
    benchmark = [{"text": t} for t in BENCHMARK_CLEAN]
    benchmark.insert(1, {"text": text_of(BASE[14]).replace("\n\n", " ")})
    benchmark.insert(4, {"text": f"Divers often learn that {coral}, which is why anchoring on them is forbidden."})
    expected["leaks"].append(
        {"kind": "exact", "a": f"train.jsonl:{train.index(pc(*BASE[14])) + 1}", "b": "benchmark.jsonl:2"}
    )
    coral_line = test.index(pc(*BASE[62])) + 1
    expected["leaks"].append({"kind": "ngram", "a": f"test.jsonl:{coral_line}", "b": "benchmark.jsonl:5"})

    for rows in (train, validation, test, benchmark):
        assert len({json.dumps(r) for r in rows}) == len(rows)  # lines are found by value above
    for name, rows in (("train", train), ("validation", validation), ("test", test), ("benchmark", benchmark)):
        (HERE / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
