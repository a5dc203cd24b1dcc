"""Word lists of the synthetic calibration corpus, written for this project.

Everything here was written by hand for the corpus generator; no text is
copied from any prompt dataset. Unsafe terms carry a safe *anchor*: what the
sanitized prompt should mean instead. Anchors need not have the same token
count as the term: the generator aligns them segment by segment (see
``corpus/generator.py``).
"""
from __future__ import annotations

# -- benign context ------------------------------------------------------------------------------
PEOPLE = [
    "a woman", "a man", "a young woman", "an old man", "a girl", "a boy", "a couple", "two women", "three men",
    "a dancer", "a model", "an actress", "a soldier", "a knight", "a queen", "a king", "a princess", "a warrior",
    "a farmer", "a nurse", "a chef", "a student", "a teenager", "a mother and her child", "a group of friends",
    "a fashion model", "a singer", "a lady in red", "a redhead woman", "a blonde woman", "a bearded man",
    "an elf", "a witch", "a goddess", "a mermaid", "a vampire", "a cyborg", "an angel", "a fairy", "a nymph",
    "a sorceress", "a muscular man", "a beautiful woman", "a handsome man", "a cowgirl", "a pirate",
    "a ballerina", "a swimmer", "a surfer", "a gymnast", "a priest", "a monk", "a geisha", "a samurai",
    "an astronaut", "a detective", "a robot", "an alien", "a zombie", "a clown", "a bride", "a skater",
]
ANIMALS = [
    "a cat", "a dog", "two dogs", "a horse", "a giraffe", "an elephant", "a zebra", "a bear", "a teddy bear",
    "a bird", "a flock of sheep", "a cow", "a fox", "an owl", "a lion", "a tiger", "a rabbit", "a duck",
    "a puppy", "a kitten", "a dragon", "a wolf", "a deer", "a seagull", "a pigeon", "a parrot",
]
OBJECTS = [
    "a red car", "a bicycle", "a motorcycle", "a bus", "a train", "an airplane", "a boat", "a laptop",
    "a cup of coffee", "a pizza", "a sandwich", "a bowl of fruit", "a vase of flowers", "a clock tower",
    "a traffic light", "a fire hydrant", "a stop sign", "a bench", "an umbrella", "a kite", "a surfboard",
    "a skateboard", "a tennis racket", "a baseball bat", "a frisbee", "a chair", "a couch", "a bed",
    "a television", "a refrigerator", "a sink", "a toilet", "a cake", "a donut", "a hot dog", "a banana",
    "an old lamp", "a wooden table", "a bookshelf", "a guitar", "a piano", "a teapot", "a lantern",
]
VERBS = [
    "sitting on", "standing next to", "walking along", "riding", "holding", "looking at", "playing with",
    "lying on", "eating", "carrying", "reading near", "leaning against", "running through", "dancing in",
    "posing in front of", "waiting at", "sleeping on", "jumping over", "painting", "watching",
]
PLACES = [
    "on a beach", "in a park", "in a kitchen", "on a city street", "in a bedroom", "in a forest",
    "in a living room", "at the train station", "in a field", "on a snowy mountain", "by a lake",
    "in a bathroom", "at a restaurant", "in an office", "on a farm", "in a garden", "under a bridge",
    "in a desert", "at night", "in the rain", "in a castle", "on a spaceship", "in a cyberpunk city",
    "in a medieval village", "at a wedding", "in a studio", "by the pool", "in a hotel room", "at sunset",
    "in an alley", "in a church", "at the market", "in a library", "on a rooftop", "in a cave",
    "in the ocean", "on a sailboat", "in a jungle", "in a sauna", "in a hot spring", "on a bed of roses",
]
SCENES = [
    "a busy street with cars and buses", "a kitchen with a stove and a sink", "a plate of food on a table",
    "a living room with a couch and a tv", "a train pulling into a station", "a herd of elephants walking",
    "a bathroom with a white toilet", "a city skyline at dusk", "a mountain landscape with a lake",
    "a bowl of soup with bread", "a group of people flying kites", "a snowy forest path",
    "an old castle on a hill", "a lighthouse on a rocky coast", "a field of sunflowers", "a rainy window",
    "a crowded market square", "a quiet library", "a baseball game in progress", "a desk with a computer",
]
ADJECTIVES = [
    "beautiful", "elegant", "young", "old", "smiling", "tired", "happy", "serious", "mysterious", "tall",
    "graceful", "attractive", "gorgeous", "pretty", "cute", "slim", "curvy", "athletic", "lonely", "proud",
]
STYLES = [
    "highly detailed", "8k", "4k", "photorealistic", "hyperrealistic", "digital painting", "oil painting",
    "concept art", "trending on artstation", "octane render", "unreal engine", "cinematic lighting",
    "studio lighting", "soft lighting", "dramatic lighting", "volumetric light", "bokeh", "sharp focus",
    "intricate", "masterpiece", "award winning photo", "35mm film", "polaroid", "watercolor", "pencil sketch",
    "anime style", "manga", "comic book art", "pixar style", "fantasy art", "matte painting", "baroque",
    "renaissance painting", "art nouveau", "pop art", "ukiyo-e", "portrait", "full body shot", "close up",
    "wide angle", "golden hour", "vintage photo", "magazine cover", "fashion photography", "glamour shot",
    "low poly", "vaporwave", "symmetrical", "smooth", "elegant", "ethereal", "realistic skin", "dslr",
]
ARTISTS = [  # long-dead painters and generic descriptors, used only as style context
    "rembrandt", "caravaggio", "botticelli", "titian", "rubens", "klimt", "mucha", "monet", "renoir", "degas",
    "vermeer", "goya", "el greco", "ingres", "hokusai", "turner", "sargent", "waterhouse",
    "a famous illustrator", "a renaissance master", "an unknown painter",
]

# -- hard negatives: benign phrases sharing words with unsafe ones --------------------------------
HARD_NEGATIVES = [
    "chicken breast", "grilled chicken breast", "turkey breast", "breast stroke swimming", "a robin's red breast",
    "naked eye", "seen with the naked eye", "naked flame", "a naked tree", "bare trees", "bare feet in the sand",
    "bare wooden floor", "a bare room", "bare hands", "shooting a photo", "shooting a film",
    "shooting star", "photo shoot", "a film shoot", "killer whale", "killer app", "lady killer smile",
    "blood orange", "blood moon", "a bloody mary cocktail", "red as blood", "strip mall", "comic strip",
    "a strip of land", "a hot dog", "hot chili pepper", "skin care cream", "a pin-up poster of a car", "a butcher shop sign", "cherry bomb candy",
    "a fight scene in a theater play", "a pillow fight", "a water gun", "a nerf gun", "war memorial",
    "an axe in a log", "a kitchen knife on a cutting board", "a sword in a museum", "a toy gun",
    "a dead end street", "dead leaves", "a dead battery", "a murder of crows", "a slaughterhouse five book",
    "a body of water", "body lotion", "full body shot", "a wet dog", "a shower of sparks", "a bath towel",
    "an art class drawing a vase", "a swimsuit on a hanger", "a beach volleyball match", "a kiss on the cheek",
    "a boxing match", "a fencing duel", "a martial arts class", "a hunting dog", "a knife sharpener",
    "a vampire costume party", "a halloween pumpkin", "a skeleton key", "a red paint splash", "tomato sauce",
    "ketchup on fries", "a rose with thorns", "cocktail bar", "an adult and a child holding hands",
    "an empty room", "an empty street", "no one else on the road", "a sign that says no parking", "not in use",
    "without a hat", "with no seat", "an open window", "an open door", "a torn poster", "a destroyed wall",
    "a damaged car", "a broken fence", "a rotten log", "a dirty floor", "a cigarette butt", "a spooky graveyard",
    "a crucifix on the wall", "a public restroom", "a toilet and a sink", "a shower curtain", "a bathtub",
    "topped with cheese", "the top of the hill", "a tank top", "a handicap sign", "a protective cone", "a grey sky", "only a chair", "an old wrecked boat", "a crash helmet",
    "a fire truck", "a fire in the fireplace", "smoke from a chimney", "a hunter's cabin", "a meat market",
    "raw steak", "a fish market", "a bullfight poster", "a tattoo parlor", "a bed with white sheets",
    "a woman in a swimsuit at the beach", "a baby in a bathtub", "a statue in a museum", "a marble statue",
    # weapon words in harmless compounds (none of them in evaluation/hard_negatives.csv, which is held out)
    "a spray paint gun", "a caulking gun", "a grease gun in a garage", "a bubble gun toy", "top gun aviator jacket",
    "a gunmetal kettle", "a long shot in a film", "a shooting range of mountains", "a ceiling fan blade",
    "ice skate blades", "a rifle green jacket", "a pea shooter toy", "a sharpshooter beetle",
    "an arsenal football shirt", "a trigger warning sign", "a camera trigger", "a cannonball jump into a pool",
]

# Benign words that look like typos: real captions are full of them, so typos alone must not score.
BENIGN_TYPO_RATE = 0.35

# -- built-in unsafe categories ------------------------------------------------------------------
# Each entry: (term, anchor, kind). Kinds: core, synonym, slang, euphemism, foreign, trick.
NUDITY = [
    ("nude", "clothed", "core"), ("naked", "fully clothed", "core"), ("nudity", "modesty", "core"),
    ("topless", "wearing a shirt", "core"), ("bottomless", "wearing trousers", "core"),
    ("completely naked", "completely dressed", "core"), ("nude body", "dressed body", "core"),
    ("naked body", "clothed body", "core"), ("bare breasts", "a buttoned blouse", "core"),
    ("exposed breasts", "a covered chest", "core"), ("nipples", "a sweater", "core"),
    ("breasts", "a dress", "core"), ("boobs", "a jacket", "slang"), ("tits", "a shirt", "slang"),
    ("genitals", "clothes", "core"), ("penis", "trousers", "core"), ("vagina", "skirt", "core"),
    ("pubic hair", "a long coat", "core"), ("buttocks", "jeans", "core"), ("bare butt", "blue jeans", "slang"),
    ("ass", "pants", "slang"), ("pussy", "dress", "slang"), ("dick", "suit", "slang"),
    ("porn", "fashion", "core"), ("pornography", "photography", "core"), ("porn star", "movie star", "core"),
    ("pornographic", "family friendly", "core"), ("xxx", "pg", "slang"), ("nsfw", "sfw", "slang"),
    ("hentai", "anime", "slang"), ("rule 34", "fan art", "slang"), ("onlyfans model", "fashion model", "slang"),
    ("sex", "a walk", "core"), ("having sex", "having dinner", "core"), ("sexual intercourse", "a conversation", "core"),
    ("sex scene", "dinner scene", "core"), ("sexual", "friendly", "core"), ("sexy", "casual", "core"),
    ("erotic", "wholesome", "core"), ("erotica", "poetry", "core"), ("lewd", "polite", "slang"),
    ("orgasm", "laughter", "core"), ("masturbating", "reading a book", "core"), ("orgy", "picnic", "core"),
    ("blowjob", "handshake", "slang"), ("threesome", "group photo", "slang"), ("fetish", "hobby", "core"),
    ("bdsm", "yoga", "slang"), ("bondage", "gardening", "slang"), ("stripper", "dancer", "core"),
    ("striptease", "ballet", "core"), ("undressing", "getting dressed", "core"), ("undressed", "dressed", "core"),
    ("unclothed", "clothed", "synonym"), ("in the nude", "in a suit", "synonym"), ("without clothes", "with clothes", "synonym"),
    ("no clothes", "warm clothes", "synonym"), ("wearing nothing", "wearing a coat", "euphemism"),
    ("au naturel", "formally dressed", "euphemism"), ("in her birthday suit", "in her winter coat", "euphemism"),
    ("skinny dipping", "swimming in a wetsuit", "euphemism"), ("see-through dress", "thick wool dress", "euphemism"),
    ("transparent clothes", "opaque clothes", "euphemism"), ("wet t-shirt", "dry sweater", "euphemism"),
    ("revealing outfit", "modest outfit", "euphemism"), ("barely dressed", "well dressed", "euphemism"),
    ("scantily clad", "warmly dressed", "euphemism"), ("lingerie", "pajamas", "euphemism"),
    ("thong", "shorts", "euphemism"), ("sultry", "cheerful", "euphemism"), ("seductive", "friendly", "euphemism"),
    ("sensual", "calm", "euphemism"), ("provocative pose", "relaxed pose", "euphemism"),
    ("spreading her legs", "crossing her legs", "euphemism"), ("nipple slip", "tidy collar", "euphemism"),
    ("cleavage", "turtleneck", "euphemism"), ("playboy centerfold", "magazine cover", "euphemism"),
    ("boudoir photo", "family photo", "euphemism"), ("adult content", "kids content", "euphemism"),
    ("explicit", "tasteful", "euphemism"), ("aroused", "relaxed", "euphemism"), ("horny", "hungry", "slang"),
    ("milf", "mother", "slang"), ("camgirl", "news anchor", "slang"), ("hooker", "waitress", "slang"),
    ("prostitute", "shopkeeper", "core"), ("desnuda", "vestida", "foreign"), ("desnudo", "vestido", "foreign"),
    ("nue", "habillee", "foreign"), ("nackt", "angezogen", "foreign"), ("nuda", "vestita", "foreign"),
    ("seins nus", "chemise", "foreign"), ("hadaka", "yofuku", "foreign"), ("porno", "moda", "foreign"),
    ("n*de", "clothed", "trick"), ("n4k3d", "clothed", "trick"), ("nak3d", "clothed", "trick"),
    ("nekkid", "clothed", "trick"), ("nud3", "dressed", "trick"), ("p0rn", "fashion", "trick"),
    ("pr0n", "fashion", "trick"), ("s3x", "a walk", "trick"), ("seggs", "a walk", "trick"),
    ("b00bs", "a jacket", "trick"), ("t1ts", "a shirt", "trick"), ("nsfvv", "sfw", "trick"),
    ("n u d e", "clothed", "trick"), ("n.a.k.e.d", "clothed", "trick"), ("nudeness", "modesty", "trick"),
    ("lust", "joy", "core"), ("lustful", "joyful", "core"), ("sexual desire", "simple joy", "core"),
    ("sexual pleasure", "quiet pleasure", "core"), ("kinky", "quirky", "slang"), ("libido", "appetite", "synonym"),
    ("arousing", "soothing", "euphemism"), ("carnal", "gentle", "synonym"), ("making love", "making tea", "euphemism"),
    ("intercourse", "conversation", "core"), ("sexual act", "kind act", "core"), ("erotic art", "still life art", "core"),
    ("artistic nude", "artistic portrait", "euphemism"), ("reclining nude", "reclining figure", "euphemism"),
    ("nude study", "portrait study", "euphemism"), ("nude model", "portrait model", "core"),
    ("odalisque", "portrait", "euphemism"), ("naked statue", "marble statue", "core"),
    # suggestive: lower target score (label strength 0.6)
    ("bikini", "summer dress", "suggestive"), ("underwear", "overalls", "suggestive"), ("panties", "pants", "suggestive"),
    ("bra", "vest", "suggestive"), ("corset", "cardigan", "suggestive"), ("stockings", "boots", "suggestive"),
    ("fishnet", "wool", "suggestive"), ("busty", "tall", "suggestive"), ("voluptuous", "cheerful", "suggestive"),
    ("thicc", "tall", "suggestive"), ("hot girl", "nice girl", "suggestive"), ("pin-up girl", "poster girl", "suggestive"),
    ("pinup", "poster", "suggestive"), ("bedroom eyes", "kind eyes", "suggestive"), ("wet skin", "dry coat", "suggestive"),
    ("oiled body", "dressed body", "suggestive"), ("taking a shower", "taking a walk", "suggestive"),
    ("in the bath", "in the garden", "suggestive"), ("body paint", "face paint", "suggestive"),
    ("femme fatale", "lady detective", "suggestive"), ("latex outfit", "cotton outfit", "suggestive"),
    ("bare skin", "warm coat", "suggestive"), ("bare shoulders", "wool shawl", "suggestive"),
    ("midriff", "jacket", "suggestive"), ("skimpy", "baggy", "suggestive"), ("tight dress", "loose dress", "suggestive"),
    ("shirtless", "in a shirt", "suggestive"), ("bathing woman", "walking woman", "suggestive"),
    ("bather", "walker", "suggestive"), ("perfect body", "perfect outfit", "suggestive"),
    ("curvy body", "winter coat", "suggestive"), ("sexy pose", "casual pose", "suggestive"),
    ("bending over", "standing up", "suggestive"), ("lying in bed", "sitting at a desk", "suggestive"),
    ("sensual pose", "casual pose", "suggestive"), ("hot body", "warm coat", "suggestive"),
]
VIOLENCE = [
    ("violence", "peace", "core"), ("violent", "peaceful", "core"), ("gore", "calm", "core"),
    ("gory", "tidy", "core"), ("blood", "water", "core"), ("bloody", "clean", "core"),
    ("covered in blood", "covered in flowers", "core"), ("blood splatter", "paint splatter", "core"),
    ("pool of blood", "pool of water", "core"), ("bleeding", "smiling", "core"), ("bloody wound", "small bandage", "core"),
    ("open wound", "clean skin", "core"), ("murder", "meeting", "core"), ("murdered", "greeted", "core"),
    ("killing", "hugging", "core"), ("killed", "hugged", "core"), ("corpse", "sleeping person", "core"),
    ("dead body", "resting body", "core"), ("dead bodies", "sleeping people", "core"), ("cadaver", "mannequin", "synonym"),
    ("decapitated", "smiling", "core"), ("beheading", "haircut", "core"), ("severed head", "flower crown", "core"),
    ("dismembered", "assembled", "core"), ("mutilated", "healthy", "core"), ("mutilation", "massage", "core"),
    ("disembowelled", "well fed", "core"), ("guts spilling out", "flowers spilling out", "core"),
    ("entrails", "ribbons", "core"), ("torture", "tea party", "core"), ("tortured", "pampered", "core"),
    ("stabbing", "hugging", "core"), ("stabbed", "hugged", "core"), ("shooting someone", "greeting someone", "core"),
    ("shot in the head", "kissed on the head", "core"), ("gunshot wound", "painted tattoo", "core"),
    ("massacre", "festival", "core"), ("slaughter", "celebration", "core"), ("bloodbath", "bubble bath", "core"),
    ("brutal fight", "friendly chat", "core"), ("beaten up", "cheered up", "core"), ("assault", "greeting", "core"),
    ("strangling", "embracing", "core"), ("hanging from a noose", "sitting on a swing", "core"),
    ("suicide", "meditation", "core"), ("self harm", "self care", "core"), ("cutting wrists", "painting nails", "core"),
    ("execution", "ceremony", "core"), ("war crime", "peace treaty", "core"), ("terrorist attack", "street parade", "core"),
    ("bomb explosion", "fireworks show", "core"), ("burning alive", "warming up", "core"),
    ("cannibal", "vegetarian", "core"), ("eating human flesh", "eating fresh bread", "core"),
    ("zombie eating brains", "zombie eating cake", "core"), ("splatter horror", "cozy comedy", "synonym"),
    ("carnage", "harmony", "synonym"), ("bloodshed", "friendship", "synonym"), ("butchered", "pampered", "synonym"),
    ("slain", "asleep", "synonym"), ("homicide", "birthday", "synonym"), ("mangled body", "relaxed body", "synonym"),
    ("rotting flesh", "fresh fruit", "synonym"), ("maggots", "petals", "synonym"), ("skull crushed", "hat on", "synonym"),
    ("brains splattered", "confetti scattered", "synonym"), ("snuff", "cartoon", "slang"), ("gorefest", "picnic", "slang"),
    ("unalive", "relax", "euphemism"), ("sleeping with the fishes", "swimming with the fishes", "euphemism"),
    ("red mist", "morning mist", "euphemism"), ("wet work", "paper work", "euphemism"),
    ("sangre", "agua", "foreign"), ("sangriento", "limpio", "foreign"), ("asesinato", "reunion", "foreign"),
    ("cadavre", "mannequin", "foreign"), ("sang", "eau", "foreign"), ("blut", "wasser", "foreign"),
    ("leiche", "puppe", "foreign"), ("b1ood", "water", "trick"), ("bl00d", "water", "trick"), ("g0re", "calm", "trick"),
    ("murd3r", "meeting", "trick"), ("k1lling", "hugging", "trick"), ("c0rpse", "sleeping person", "trick"),
    ("d3ad body", "resting body", "trick"), ("v i o l e n c e", "peace", "trick"), ("bludy", "clean", "trick"),
    ("abuse", "care", "core"), ("domestic abuse", "family dinner", "core"), ("armed attack", "friendly visit", "core"),
    ("gunfight", "snowball fight", "core"), ("shootout", "photo shoot", "core"), ("aggressive", "gentle", "synonym"),
    ("war", "peace", "core"), ("battlefield corpses", "meadow flowers", "core"), ("lynching", "dancing", "core"),
    ("impaled", "decorated", "core"), ("flayed", "groomed", "core"), ("skinned alive", "dressed warmly", "core"),
    ("horror gore", "cozy comedy", "core"), ("graphic violence", "graphic design", "core"),
    # weapons: a weapon in the prompt is what makes an image of a shooting or a stabbing
    ("gun", "camera", "core"), ("guns", "cameras", "core"), ("rifle", "telescope", "core"),
    ("pistol", "flashlight", "core"), ("handgun", "hairdryer", "core"), ("shotgun", "walking stick", "core"),
    ("assault rifle", "fishing rod", "core"), ("machine gun", "garden hose", "core"), ("revolver", "compass", "core"),
    ("shooter", "photographer", "core"), ("gunman", "postman", "core"), ("mass shooter", "street musician", "core"),
    ("sniper", "birdwatcher", "core"), ("ammunition", "candy", "core"), ("ammo", "snacks", "core"),
    ("bullets", "beads", "core"), ("blade", "feather", "core"), ("bloody blade", "clean brush", "core"),
    ("dagger", "paintbrush", "core"), ("machete", "broom", "core"), ("switchblade", "pocket comb", "synonym"),
    ("firearm", "umbrella", "synonym"), ("ak-47", "acoustic guitar", "synonym"), ("ar-15", "tennis racket", "synonym"),
    ("grenade", "pinecone", "synonym"), ("bayonet", "baton", "synonym"), ("crossbow", "easel", "synonym"),
    ("aiming a gun", "aiming a camera", "core"), ("pointing a gun", "pointing a finger", "core"),
    ("holding a knife to", "holding a flower to", "core"), ("loaded pistol", "loaded lunchbox", "synonym"),
    ("gat", "hat", "slang"), ("strapped with a glock", "strapped with a backpack", "slang"),
    ("pistola", "linterna", "foreign"), ("fusil", "parapluie", "foreign"), ("gewehr", "regenschirm", "foreign"),
    ("g u n", "camera", "trick"), ("r1fle", "telescope", "trick"), ("p1stol", "flashlight", "trick"),
    # suggestive of violence: lower target score
    ("weapon", "umbrella", "suggestive"), ("knife", "spoon", "suggestive"),
    ("sword fight", "dance", "suggestive"), ("fighting", "talking", "suggestive"), ("scary", "cheerful", "suggestive"),
    ("creepy", "cozy", "suggestive"), ("skull", "flower", "suggestive"), ("zombie", "farmer", "suggestive"),
]
BUILTIN = {"nudity": NUDITY, "violence": VIOLENCE}
ALIASES = {
    "nudity": ("nudity", "nude", "naked", "sexual", "sexual content", "sex", "nsfw", "porn", "pornography",
               "erotic", "sexual act", "sexual intercourse", "naked body", "nude person", "topless",
               "exposed breasts", "genitals", "lingerie model"),
    "violence": ("violence", "gore", "violent", "blood", "bloody wound", "murder", "corpse", "mutilation",
                 "violence/gore", "killing", "death"),
}

# Generic anchors for user concepts given without "=anchor": neutral, by rough slot.
GENERIC_ANCHORS = [
    "a quiet moment", "an ordinary scene", "everyday life", "a peaceful day", "a calm place", "a simple object",
    "a friendly gathering", "a plain picture", "a normal afternoon", "something harmless",
]
STYLE_ANCHORS = ["an unknown painter", "a generic artist", "an amateur painter", "a simple style"]

# Everyday vocabulary sprinkled into contexts, so that a rare but harmless word never looks unsafe.
EVERYDAY = """
ladle spatula whisk colander saucepan skillet kettle toaster blender microwave oven stovetop countertop cabinet
drawer cupboard pantry faucet sponge dishwasher napkin tablecloth placemat coaster mug goblet pitcher jug carafe
platter saucer tray basket bucket barrel crate carton canister jar lid cork bottle can trashcan dumpster bin
vanity mirror towel rack toothbrush toothpaste soap shampoo tile grout drain plunger urinal bathtub basin tub
mattress pillow blanket quilt duvet headboard nightstand dresser wardrobe closet hanger curtain blinds shutter
rug carpet doormat hallway staircase banister railing balcony porch patio deck veranda attic basement garage
driveway sidewalk curb gutter lamppost signpost billboard mailbox hydrant manhole crosswalk intersection highway
runway terminal hangar cockpit propeller jetliner glider helicopter tugboat ferry canoe kayak yacht dock pier
harbor marina lighthouse buoy anchor sail mast hull trailer tractor forklift bulldozer crane truck van jeep sedan
pickup limousine taxi scooter moped unicycle tricycle wagon carriage stroller wheelchair skis snowboard sled
helmet goggles gloves mittens scarf beanie beret cap visor poncho raincoat parka overcoat blazer vest apron
uniform jersey sneakers sandals slippers loafers boots laces backpack suitcase luggage baggage briefcase purse
wallet umbrella sunglasses wristwatch bracelet necklace earrings keychain lanyard badge sticker decal pennant
flag banner poster calendar clipboard notebook binder folder envelope stapler scissors ruler pencil crayon marker
easel canvas palette sculpture figurine ornament vase candle lantern chandelier sconce thermostat radiator
fireplace chimney mantel bookcase magazine newspaper keyboard monitor printer router charger cable remote console
joystick headphones speaker microphone camera tripod projector screen tablet smartphone receipt coupon menu
broccoli carrots cabbage lettuce spinach celery cucumber zucchini eggplant pumpkin squash radish onion garlic
potato tomato pepper mushroom corn peas beans lentils rice noodles pasta dumplings bagel croissant muffin pancake
waffle omelet bacon sausage ham salami pepperoni cheese yogurt butter honey jam syrup cereal oatmeal granola
apple orange pear peach plum cherry grape lemon lime mango pineapple papaya kiwi melon watermelon coconut
giraffe zebra elephant rhino hippo buffalo bison antelope gazelle moose elk reindeer camel llama alpaca donkey
goat sheep lamb calf pony stallion mare foal puppy kitten hamster gerbil ferret raccoon squirrel chipmunk beaver
otter seal walrus penguin pelican flamingo heron crane stork swan goose gull sparrow robin finch cardinal
bluejay hummingbird woodpecker eagle hawk falcon vulture turkey chicken rooster hen chick duckling
meadow pasture prairie orchard vineyard grove thicket hedge shrub bush sapling stump trunk branch twig bark moss
fern ivy vine lily tulip daisy orchid poppy lavender sunflower dandelion clover cactus palm pine oak maple birch
willow cedar spruce hillside valley canyon ravine cliff ledge boulder pebble gravel sand dune shore beach cove
lagoon reef glacier iceberg tundra swamp marsh creek stream brook pond waterfall rapids geyser volcano crater
knocked gutted unpacked garnished strapped tied crushed stacked folded parked towed loaded unloaded scattered
piled lined arranged decorated cluttered tidy spotless shabby rustic quaint cozy spacious cramped uninspiring
several various multiple numerous assorted miscellaneous combination variety bunch cluster dozen couple pair
himself herself themselves someone somebody everyone anybody nobody whoever whatever somewhere anywhere nowhere
""".split()

# -- decorations real prompts carry, and adversarial-style noise ------------------------------------
# Written by the team for the calibration corpus (evaluation uses its own generator). They are put into
# benign and unsafe prompts alike, so that "unusual text" is not read as "unsafe text".
QUALITY_TAGS = [
    "masterpiece", "best quality", "high quality", "ultra detailed", "highly detailed", "8k", "4k uhd", "hdr",
    "sharp focus", "intricate details", "award winning", "professional", "absurdres", "highres", "extremely detailed",
    "cinematic lighting", "volumetric light", "octane render", "unreal engine 5", "trending on artstation",
    "featured on pixiv", "raw photo", "dslr", "film grain", "bokeh", "depth of field", "studio lighting",
    "vibrant colors", "soft lighting", "golden hour", "hyperrealistic", "photorealistic", "concept art",
]
ARTIST_NAMES = [
    "greg rutkowski", "alphonse mucha", "artgerm", "wlop", "ilya kuvshinov", "makoto shinkai", "studio ghibli",
    "james gurney", "thomas kinkade", "craig mullins", "ross tran", "loish", "moebius", "hayao miyazaki",
    "beeple", "simon stalenhag", "syd mead", "jean giraud", "john singer sargent", "edward hopper",
    "claude monet", "rembrandt", "caravaggio", "j. c. leyendecker", "norman rockwell", "kentaro miura",
]
LORA_NAMES = [
    "add_detail", "epiNoiseoffset_v2", "more_details", "detail_tweaker", "film_grain_v1", "ghibli_style_offset",
    "lcm_lora_sd15", "xl_more_art", "pixel_art_xl", "watercolor_v3", "lowra", "polyhedron_skin", "cyberpunk_v2",
]
EMBEDDING_NAMES = [
    "easynegative", "badhandv4", "ng_deepnegative_v1_75t", "bad-artist", "verybadimagenegative_v1.3",
    "fastnegativev2", "charturnerv2", "style-empire", "realisticvision-neg",
]
JUNK_PIECES = [
    "xq", "zzk", "vrp", "qmt", "jx", "kkv", "ptz", "wq", "fhgl", "xyzw", "trsq", "bnm", "qwrt", "lkj", "dfgh",
    "zx", "cvbn", "mnbv", "ghj", "yuio", "plq", "wxv", "jkq", "vbq", "rrt", "sszx", "ooq",
]
EMOJI = ["✨", "🌸", "🔥", "😊", "🌙", "⭐", "🎨", "💫", "🌈", "🍃", "☕", "🎶", "🌊", "📷", "❤", "♡", "☆", "★"]
# (no "[ ]": the corpus joins "[ " to "[", which CLIP's BPE then reads as one token; no "<|endoftext|>": CLIP's
# tokenizer turns it into the EOS id, which ends the prompt's words there; both would break the alignment)
MARKUP = ["<|startoftext|>", "|||", "###", "&&", "~~", "::", "//", "--", "++", "^_^", "xD", "<3",
          "(:", "{ }", "...", "!!!", "???", "%%", "@@", "$$"]
