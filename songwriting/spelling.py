"""Sung, archaic and Scots spellings, read before the dictionary is asked (docs/songwriting.md, "Folding").

Three layers, tried in this order by `Phonology` (the rules need the dictionary, so they live there; this
module holds what does not):

1. `clean`: the token as written becomes a lookup key: lower case, curly quotes straightened, surrounding
   punctuation and quotes stripped (an apostrophe that belongs to the word, as in `lovin'` or `'em`, is kept),
   diacritics dropped except a grave or acute accent on a final `-èd`, which says the ending is sounded
   (`blessèd`, two syllables), and the thorn (`þe`) spelled `th`.
2. `IRREGULAR`: forms no rule reaches, each with its standard spelling (the gloss, which decides whether two
   spellings are the same word) and how it is sung. Scots forms are given their Scots sound first (`twa`
   T W AO1, so that it rhymes with `awa`, `a'` and `law` as Burns rhymes them) and the gloss's sound after it
   where a singer may anglicise (`two`); a constraint is met when one pronunciation meets it.
3. `orthographic_variants`: early-modern spellings (`haue`, `vpon`, `shee`, `soone`, `ffor`, `kyng`), tried
   only when the word itself is in no table and no dictionary.
"""

from __future__ import annotations

import re
import unicodedata

# The form, its gloss (standard spelling), then its pronunciations, ARPAbet with stress digits, `;` between.
_IRREGULAR_TABLE = """
# elisions the dictionary lacks (it has o', ol', 'em, 'tis, 'twas, ne'er and the -in' forms it knows)
th'        the      DH
'em        them     AH0 M
em         them     AH0 M ; EH1 M
o'         of       OW1 ; AH0
ol'        old      OW1 L
i'         in       IH0
t'         to       T
an'        and      AE1 N ; AH0 N
thro'      through  TH R UW1
thro       through  TH R UW1
tho'       though   DH OW1
tho        though   DH OW1
altho'     although AO2 L DH OW1
altho      although AO2 L DH OW1
wi'        with     W IH1 ; W IH1 DH
wi         with     W IH1 ; W IH1 DH
o'er       over     OW1 R
oer        over     OW1 R
e'er       ever     EH1 R
eer        ever     EH1 R
ne'er      never    N EH1 R
neer       never    N EH1 R
e'en       even     IY1 N
ta'en      taken    T EY1 N
taen       taken    T EY1 N
gi'en      given    G IY1 N ; G IH1 N
gien       given    G IY1 N
heav'n     heaven   HH EH1 V N
'neath     beneath  N IY1 TH
neath      beneath  N IY1 TH
'gainst    against  G EH1 N S T ; G EY1 N S T
'mid       amid     M IH1 D
'midst     amidst   M IH1 D S T
'mong      among    M AH1 NG
'twixt     betwixt  T W IH1 K S T
'twill     it will  T W IH1 L
'twere     it were  T W ER1
'twould    it would T W UH1 D
ev'ry      every    EH1 V R IY0
e'e        eye      IY1
ee         eye      IY1
# early-modern forms the spelling rules do not reach
heere      here     HH IY1 R
ile        I'll     AY1 L
i'le       I'll     AY1 L
'ile       I'll     AY1 L
i'll       I'll     AY1 L
fa'se      false    F AO1 S
yf         if       IH1 F
ys         is       IH1 Z
ther       there    DH EH1 R
shal       shall    SH AE1 L
agen       again    AH0 G EH1 N
hie        hasten   HH AY1
nought     naught   N AO1 T
sooth      truth    S UW1 TH
wot        know     W AA1 T
shews      shows    SH OW1 Z
afore      before   AH0 F AO1 R
adown      down     AH0 D AW1 N
woud       would    W UH1 D
coud       could    K UH1 D
shoud      should   SH UH1 D
wolde      would    W UH1 D
sholde     should   SH UH1 D
shold      should   SH UH1 D
sayd       said     S EH1 D
sayes      says     S EH1 Z
saies      says     S EH1 Z
saith      says     S EH1 TH
# Scots: negatives in -na
canna      cannot   K AE1 N AH0
cannae     cannot   K AE1 N IY0
dinna      do not   D IH1 N AH0
dinnae     do not   D IH1 N IY0
winna      will not W IH1 N AH0
winnae     will not W IH1 N IY0
wadna      would not W AA1 D N AH0
woudna     would not W UH1 D N AH0
wouldna    would not W UH1 D N AH0
couldna    could not K UH1 D N AH0
shouldna   should not SH UH1 D N AH0
sudna      should not S AH1 D N AH0
didna      did not  D IH1 D N AH0
hadna      had not  HH AE1 D N AH0
hasna      has not  HH AE1 Z N AH0
isna       is not   IH1 Z N AH0
wasna      was not  W AA1 Z N AH0
werena     were not W ER1 N AH0
maunna     must not M AO1 N AH0
# Scots: the a', awa, twa set (one vowel, as law and saw)
a'         all      AO1
aw         all      AO1
awa        away     AH0 W AO1 ; AH0 W EY1
awa'       away     AH0 W AO1 ; AH0 W EY1
twa        two      T W AO1 ; T UW1
wha        who      HH W AO1 ; HH UW1
wha's      who's    HH W AO1 Z ; HH UW1 Z
fa'        fall     F AO1
fa         fall     F AO1
ca'        call     K AO1
ca         call     K AO1
ca'd       called   K AO1 D
wa'        wall     W AO1
wa         wall     W AO1
ba'        ball     B AO1
ba         ball     B AO1
ha'        hall     HH AO1
ha         hall     HH AO1 ; HH AA1
sma'       small    S M AO1
sma        small    S M AO1
sta'       stall    S T AO1
ga'        gall     G AO1
blaw       blow     B L AO1 ; B L OW1
blaws      blows    B L AO1 Z
snaw       snow     S N AO1 ; S N OW1
braw       brave    B R AO1
ava        at all   AH0 V AO1
maun       must     M AO1 N
gaun       going    G AO1 N
auld       old      AO1 L D
cauld      cold     K AO1 L D
bauld      bold     B AO1 L D
hauld      hold     HH AO1 L D
haud       hold     HH AO1 D
fause      false    F AO1 S
saut       salt     S AO1 T
faut       fault    F AO1 T
waur       worse    W AO1 R
daur       dare     D AO1 R
# Scots: ae, ai, ane (the vowel of day)
nae        no       N EY1 ; N OW1
sae        so       S EY1 ; S OW1
frae       from     F R EY1 ; F R AH1 M
fra        from     F R AA1
gae        go       G EY1 ; G OW1
gaes       goes     G EY1 Z
gaed       went     G EY1 D
gane       gone     G EY1 N
hae        have     HH EY1 ; HH AE1 V
tae        to       T EY1
wae        woe      W EY1 ; W OW1
waes       woes     W EY1 Z
mae        more     M EY1
ain        own      EY1 N ; OW1 N
ane        one      EY1 N ; W AH1 N
nane       none     N EY1 N ; N AH1 N
stane      stone    S T EY1 N ; S T OW1 N
stanes     stones   S T EY1 N Z
bane       bone     B EY1 N ; B OW1 N
banes      bones    B EY1 N Z
alane      alone    AH0 L EY1 N ; AH0 L OW1 N
tane       one      T EY1 N
hame       home     HH EY1 M ; HH OW1 M
wame       womb     W EY1 M
faem       foam     F EY1 M
baith      both     B EY1 TH ; B OW1 TH
aith       oath     EY1 TH
claes      clothes  K L EY1 Z
mair       more     M EH1 R ; M AO1 R
sair       sore     S EH1 R ; S AO1 R
whare      where    W EH1 R
whar       where    W AA1 R ; W EH1 R
rade       rode     R EY1 D ; R OW1 D
brak       broke    B R AE1 K
naething   nothing  N EY1 TH IH0 NG
naebody    nobody   N EY1 B AA2 D IY0
faither    father   F EY1 DH ER0
# Scots: ee, ie, ei (the vowel of see)
een        eyes     IY1 N
weel       well     W IY1 L
fareweel   farewell F EH2 R W IY1 L
atweel     indeed   AH0 T W IY1 L
deil       devil    D IY1 L
dee        die      D IY1
deid       dead     D IY1 D
heid       head     HH IY1 D
gie        give     G IY1 ; G IH1 V
gied       gave     G IY1 D
gies       gives    G IY1 Z
chiel      fellow   CH IY1 L
neist      next     N IY1 S T
yestreen   yesternight Y EH2 S T R IY1 N
atween     between  AH0 T W IY1 N
# Scots: ou, oo, u (the vowel of moon)
doun       down     D UW1 N
toun       town     T UW1 N
broun      brown    B R UW1 N
croun      crown    K R UW1 N
soun       sound    S UW1 N
oot        out      UW1 T
aboot      about    AH0 B UW1 T
aboon      above    AH0 B UW1 N
abune      above    AH0 B UW1 N
shoon      shoes    SH UW1 N
sune       soon     S UW1 N
noo        now      N UW1
hoo        how      HH UW1
mou        mouth    M UW1
fou        full     F UW1
fu'        full     F UW1 ; F UH1 L
pu'        pull     P UW1
pu'd       pulled   P UW1 D
lo'e       love     L UW1
lo'es      loves    L UW1 Z
lo'ed      loved    L UW1 D
luve       love     L AH1 V
muve       move     M UW1 V
gowd       gold     G AW1 D
goud       gold     G AW1 D
gowden     golden   G AW1 D AH0 N
owre       over     OW1 R ; AW1 R
ower       over     OW1 R ; AW1 ER0
stown      stolen   S T AW1 N
# Scots: the rest
alang      along    AH0 L AE1 NG
rin        run      R IH1 N
gaen       gone     G EY1 N
ga'e       gave     G EY1
gi         give     G IY1
wud        would    W UH1 D
wid        with     W IH1 D
thegither  together DH AH0 G IH1 DH ER0
nocht      nothing  N AA1 K T
ghaist     ghost    G EY1 S T
laith      loath    L EY1 TH
tauld      told     T AO1 L D
fauld      fold     F AO1 L D
thraw      throw    TH R AO1
blawn      blown    B L AO1 N
brocht     brought  B R AA1 K T
socht      sought   S AA1 K T
blude      blood    B L UH1 D ; B L AH1 D
bluid      blood    B L IH1 D ; B L AH1 D
bluidy     bloody   B L IH1 D IY0 ; B L AH1 D IY0
gude       good     G UH1 D ; G IH1 D
guid       good     G IH1 D ; G UH1 D
stude      stood    S T UH1 D
mither     mother   M IH1 DH ER0
brither    brother  B R IH1 DH ER0
anither    another  AH0 N IH1 DH ER0
ither      other    IH1 DH ER0
tither     the other T IH1 DH ER0
dochter    daughter D AA1 K T ER0
nicht      night    N IH1 K T ; N AY1 T
knicht     knight   N IH1 K T ; N AY1 T
licht      light    L IH1 K T ; L AY1 T
richt      right    R IH1 K T ; R AY1 T
micht      might    M IH1 K T ; M AY1 T
bricht     bright   B R IH1 K T ; B R AY1 T
sicht      sight    S IH1 K T ; S AY1 T
ony        any      OW1 N IY0
onie       any      OW1 N IY0
mony       many     M OW1 N IY0
monie      many     M OW1 N IY0
bonie      bonny    B AA1 N IY0
amang      among    AH0 M AE1 NG
wrang      wrong    R AE1 NG
syne       since    S AY1 N
ance       once     AE1 N S
twal       twelve   T W AA1 L
twall      twelve   T W AA1 L
pund       pound    P AH1 N D
warld      world    W AA1 R L D ; W ER1 L D
warst      worst    W AA1 R S T
bairn      child    B EH1 R N
bairns     children B EH1 R N Z
kye        cattle   K AY1
yowes      ewes     Y AW1 Z
mysel      myself   M AY0 S EH1 L
mysell     myself   M AY0 S EH1 L
himsel     himself  HH IH0 M S EH1 L
himsell    himself  HH IH0 M S EH1 L
hersel     herself  HH ER0 S EH1 L
hersell    herself  HH ER0 S EH1 L
thysel     thyself  DH AY0 S EH1 L
oursels    ourselves AW0 ER0 S EH1 L Z
intill     into     IH0 N T IH1 L
upo        upon     AH0 P OW1
ayont      beyond   AH0 Y AA1 N T
aff        off      AE1 F ; AO1 F
saft       soft     S AE1 F T
gif        if       G IH1 F
sud        should   S AH1 D
suld       should   S AH1 D
thae       those    DH EY1
whase      whose    HH W EY1 Z
tocher     dowry    T AA1 K ER0
dree       endure   D R IY1
mirk       dark     M ER1 K
unco       uncommon AH1 NG K OW0
sware      swore    S W EH1 R
kirtle     kirtle   K ER1 T AH0 L
laddie     laddie   L AE1 D IY0
dearie     dearie   D IH1 R IY0
"""


def _parse_table(text: str) -> dict[str, tuple[str, tuple[tuple[str, ...], ...]]]:
    table = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        word, rest = line.split(None, 1)
        # the gloss is the words before the first phone (phones are upper case)
        parts = rest.split()
        gloss_words = []
        while parts and not parts[0].isupper():
            gloss_words.append(parts.pop(0))
        phones = " ".join(parts)
        table[word] = (" ".join(gloss_words), tuple(tuple(p.split()) for p in phones.split(";")))
    return table


IRREGULAR = _parse_table(_IRREGULAR_TABLE)
"""form -> (gloss, pronunciations); the gloss is the standard spelling, the identity of the word."""

IRREGULAR_BY_GLOSS: dict[str, tuple[str, ...]] = {}
for _form, (_gloss, _) in IRREGULAR.items():
    IRREGULAR_BY_GLOSS[_gloss] = (*IRREGULAR_BY_GLOSS.get(_gloss, ()), _form)

APOSTROPHES = str.maketrans(  # the typographic apostrophes, as the dictionary writes them
    {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_THORN = str.maketrans({"\u00fe": "th", "\u00de": "th", "\u00f0": "th", "\u00e6": "ae", "\u0153": "oe"})
_SOUNDED_ED = re.compile(r"[\u00e8\u00e9]d$")  # belovèd, blessèd: the -ed is a syllable
_CORE = re.compile(r"[a-z](?:.*[a-z])?")


def clean(token: str) -> str:
    """The lookup key of a token: lower case, quotes and surrounding punctuation stripped, an apostrophe that
    belongs to the word kept (`lovin',` -> `lovin'`; `'em` -> `'em`; `'O` -> `'o`, which lookup then tries
    as `o`). A sounded `-èd` is kept as `-èd`; other diacritics are dropped. "" when no letter is left."""
    s = unicodedata.normalize("NFC", token).translate(APOSTROPHES).lower().translate(_THORN)
    sounded = bool(_SOUNDED_ED.search(s.rstrip(".,;:!?\"')]}")))
    s = "".join(c for c in unicodedata.normalize("NFKD", s) if not unicodedata.combining(c))
    match = _CORE.search(s)
    if not match:
        return ""
    start, end = match.span()
    core = s[start:end]
    if start > 0 and s[start - 1] == "'":
        core = "'" + core
    if end < len(s) and s[end] == "'":
        core = core + "'"
    if sounded and core.endswith("ed"):
        core = core[:-2] + "\u00e8d"
    return core


def edge_variants(word: str) -> list[str]:
    """The key as written, then without a leading and/or trailing apostrophe (it may be a quotation mark)."""
    out = [word]
    for v in (word[1:] if word.startswith("'") else None, word[:-1] if word.endswith("'") else None,
              word.strip("'")):
        if v and v not in out:
            out.append(v)
    return out


def orthographic_variants(word: str) -> list[str]:
    """Early-modern spellings read as modern ones, most likely first: u/v and i/j, y for i, a final e,
    doubled consonants, -ie for -y, -our for -or. Each variant is one or two edits from the word; the caller
    keeps the first that is in the dictionary."""
    def one(w: str) -> list[str]:
        out = []
        if "v" in w:
            out.append(re.sub(r"^v(?=[^aeiou])|(?<=[^aeiou])v(?=[^aeiou]|$)", "u", w))  # vpon -> upon
        if "u" in w:
            out.append(re.sub(r"(?<=[aeiou])u(?=[aeiour])|(?<=[aeiou]r)u(?=[aeiou])|^u(?=[aeiou])", "v", w))
            out.append(re.sub(r"(?<=[aeiou])u(?=e)", "v", w))  # haue -> have, giue -> give
            out.append(re.sub(r"(?<=[lr])u(?=e)", "v", w))  # siluer -> silver
        if "y" in w[1:]:
            out.append(w[0] + w[1:].replace("y", "i"))  # kyng -> king, sayd -> said
        if w.startswith("i") and len(w) > 2 and w[1] in "aeiou":
            out.append("j" + w[1:])  # iohn -> john
        if w.endswith("e") and len(w) >= 3:
            out.append(w[:-1])  # soone -> soon, learne -> learn
        if w.endswith("ie") and len(w) > 3:
            out.append(w[:-2] + "y")  # ladie -> lady
        if w.endswith("ye") and len(w) > 3:
            out.append(w[:-2] + "y")  # ladye -> lady
        if w.startswith("ff"):
            out.append(w[1:])  # ffor -> for
        m = re.search(r"([bcdfgklmnprstz])\1$", w)
        if m and len(w) >= 3:
            out.append(w[:-1])  # itt -> it, bishopp -> bishop
        if "our" in w:
            out.append(w.replace("our", "or"))  # saviour -> savior
        if "ee" in w:
            out.append(w.replace("ee", "e", 1))  # shee -> she
        return [v for v in out if v != w]

    first = one(word)
    second = [v2 for v in first for v2 in one(v)]
    seen: dict[str, None] = {}
    for v in first + second:
        seen.setdefault(v, None)
    return list(seen)
