"""Word lists that make the demo municipality read like a Dutch town.

Everything here is invented or a common Dutch word; first names and surnames
are the most frequent ones in the Netherlands, so no list identifies anybody.
Surnames carry their voorvoegsel separately, as the BRP stores them.
"""
from __future__ import annotations

# Common Dutch surnames, most frequent first (the generator weights them by rank).
SURNAMES: tuple[tuple[str | None, str], ...] = (
    ("de", "Jong"), (None, "Jansen"), ("de", "Vries"), ("van den", "Berg"), ("van", "Dijk"),
    (None, "Bakker"), (None, "Janssen"), (None, "Visser"), (None, "Smit"), (None, "Meijer"),
    ("de", "Boer"), (None, "Mulder"), ("de", "Groot"), (None, "Bos"), (None, "Vos"),
    (None, "Peters"), (None, "Hendriks"), ("van", "Leeuwen"), (None, "Dekker"), (None, "Brouwer"),
    ("de", "Wit"), (None, "Dijkstra"), (None, "Smits"), ("de", "Graaf"), ("van der", "Meer"),
    ("van der", "Linden"), (None, "Kok"), (None, "Jacobs"), ("de", "Haan"), (None, "Vermeulen"),
    ("van den", "Heuvel"), ("van der", "Veen"), ("van den", "Broek"), ("de", "Bruijn"), ("de", "Bruin"),
    ("van der", "Heijden"), (None, "Schouten"), ("van", "Beek"), (None, "Willems"), ("van", "Vliet"),
    ("van de", "Ven"), (None, "Hoekstra"), (None, "Maas"), (None, "Verhoeven"), (None, "Koster"),
    ("van", "Dam"), ("van der", "Wal"), (None, "Prins"), (None, "Blom"), (None, "Huisman"),
    ("de", "Koning"), (None, "Kuipers"), (None, "Postma"), (None, "Veenstra"), (None, "Kramer"),
    ("van den", "Bosch"), (None, "Wijnands"), (None, "Bosman"), ("van", "Wijk"), (None, "Timmermans"),
    (None, "Hermans"), (None, "Bouwman"), (None, "Evers"), ("van", "Rijn"), (None, "Schipper"),
    ("el", "Amrani"), (None, "Yilmaz"), (None, "Öztürk"), (None, "Bouzid"), (None, "Kaya"),
    (None, "Nguyen"), (None, "Kowalski"), (None, "Sahin"), (None, "Nijland"), ("ter", "Horst"),
)

# Two pools per sex: names common for people born before ~1975 and after.
FIRST_NAMES_CLASSIC = {
    "M": ("Johannes", "Cornelis", "Hendrik", "Jan", "Pieter", "Willem", "Gerrit", "Jacobus", "Dirk", "Theodorus",
          "Antonius", "Adrianus", "Petrus", "Gerardus", "Franciscus", "Hendrikus", "Albert", "Klaas", "Henk",
          "Kees", "Ton", "Theo", "Frans", "Wim", "Bert", "Gert", "Rob", "Hans", "Peter", "Marcel"),
    "V": ("Maria", "Johanna", "Cornelia", "Anna", "Wilhelmina", "Elisabeth", "Hendrika", "Geertruida",
          "Catharina", "Margaretha", "Adriana", "Petronella", "Jacoba", "Aaltje", "Grietje", "Ingrid",
          "Monique", "Petra", "Karin", "Annemarie", "Els", "Marja", "Ria", "Joke", "Wilma", "Anneke",
          "Marianne", "Yvonne", "Gerda", "Trijntje"),
}
FIRST_NAMES_MODERN = {
    "M": ("Daan", "Sem", "Lucas", "Levi", "Finn", "Noah", "Milan", "Bram", "Thijs", "Jesse", "Ruben", "Tim",
          "Thomas", "Lars", "Stijn", "Bas", "Mark", "Jeroen", "Martijn", "Mohamed", "Ahmed", "Youssef",
          "Mehmet", "Niels", "Joost", "Wouter", "Jasper", "Gijs", "Luuk", "Mees", "Sven", "Teun", "Jens",
          "Koen", "Rik", "Hugo", "Julian", "Adam", "Liam", "Floris", "Siem", "Boaz", "Dex", "Olivier"),
    "V": ("Emma", "Julia", "Sophie", "Tess", "Zoë", "Sara", "Eva", "Lotte", "Lisa", "Fleur", "Sanne",
          "Anouk", "Lieke", "Femke", "Iris", "Noor", "Mila", "Yara", "Saar", "Nina", "Evi", "Fenna", "Roos",
          "Esther", "Linda", "Marieke", "Fatima", "Aisha", "Samira", "Elif", "Ayşe", "Laura", "Ilse",
          "Marloes", "Kim", "Daphne", "Nienke", "Hanna", "Lynn", "Olivia", "Liv", "Maud", "Isa", "Renée"),
}
# Persons with geslacht "O" get names from either pool.
FIRST_NAMES_CLASSIC["O"] = FIRST_NAMES_CLASSIC["M"] + FIRST_NAMES_CLASSIC["V"]
FIRST_NAMES_MODERN["O"] = FIRST_NAMES_MODERN["M"] + FIRST_NAMES_MODERN["V"]

# Geboorteplaats of people not born in the municipality itself.
BIRTHPLACES_NL = (
    "Amsterdam", "Rotterdam", "'s-Gravenhage", "Utrecht", "Eindhoven", "Groningen", "Tilburg", "Almere",
    "Breda", "Nijmegen", "Apeldoorn", "Arnhem", "Haarlem", "Enschede", "Amersfoort", "Zwolle", "Leiden",
    "Zoetermeer", "Maastricht", "Dordrecht", "Deventer", "Delft", "Alkmaar", "Leeuwarden", "Hengelo",
    "Gouda", "Den Helder", "Hoorn", "Kampen", "Assen",
)
BIRTHPLACES_ABROAD = (
    "Paramaribo", "Willemstad", "Istanbul", "Ankara", "Casablanca", "Rabat", "Nador", "Antwerpen",
    "Düsseldorf", "Warschau", "Kraków", "Damascus", "Aleppo", "Kaboel", "Jakarta", "Surabaya",
)

# Street-name themes: compound-ready first parts, and the buurt named after the theme.
STREET_THEMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Bloemenbuurt", ("Rozen", "Tulpen", "Narcissen", "Lelie", "Irissen", "Krokus", "Anjer", "Dahlia",
                      "Hyacinten", "Violieren", "Asters", "Klaproos", "Korenbloem", "Zonnebloem",
                      "Margrieten", "Madeliefjes", "Seringen", "Lavendel", "Goudsbloem", "Akelei")),
    ("Bomenbuurt", ("Eiken", "Beuken", "Linden", "Essen", "Berken", "Wilgen", "Populieren", "Kastanje",
                    "Esdoorn", "Iepen", "Elzen", "Platanen", "Lariks", "Dennen", "Hazelaar", "Meidoorn",
                    "Vlier", "Walnoten", "Acacia", "Ceder")),
    ("Vogelwijk", ("Merel", "Lijster", "Spreeuwen", "Mussen", "Vinken", "Kievit", "Grutto", "Reiger",
                   "Ooievaar", "Zwaluw", "Koekoek", "Specht", "Buizerd", "Valken", "Havik", "Uilen",
                   "Meeuwen", "Roodborst", "Winterkoning", "Wielewaal")),
    ("Schildersbuurt", ("Rembrandt", "Vermeer", "Frans Hals", "Jan Steen", "Van Gogh", "Mondriaan",
                        "Breitner", "Israëls", "Mesdag", "Ruisdael", "Hobbema", "Paulus Potter", "Avercamp",
                        "Escher", "Karel Appel", "Toorop", "Weissenbruch", "Jacob Maris", "Bosboom",
                        "Van Ostade")),
    ("Schrijversbuurt", ("Vondel", "Bilderdijk", "Multatuli", "Couperus", "Hooft", "Bredero", "Huygens",
                         "Jacob Cats", "Potgieter", "Nicolaas Beets", "Staring", "Gorter", "Willem Kloos",
                         "Jacques Perk", "Heijermans", "Van Eeden", "Roland Holst", "Marsman",
                         "Slauerhoff", "Nijhoff")),
    ("Provinciënbuurt", ("Groninger", "Friese", "Drentse", "Overijsselse", "Gelderse", "Utrechtse",
                         "Zeeuwse", "Brabantse", "Limburgse", "Flevo", "Hollandse", "Zwolse", "Deventer",
                         "Kamper", "Hoornse", "Enkhuizer", "Alkmaarse", "Haarlemmer", "Leidse", "Delftse")),
    ("Rivierenbuurt", ("Rijn", "Maas", "Waal", "IJssel", "Lek", "Vecht", "Amstel", "Schelde", "Dommel",
                       "Dinkel", "Berkel", "Regge", "Eem", "Linge", "Merwede", "Hunze", "Reest", "Dieze",
                       "Mark", "Roer")),
    ("Componistenbuurt", ("Sweelinck", "Bach", "Mozart", "Beethoven", "Chopin", "Schubert", "Haydn",
                          "Händel", "Brahms", "Mahler", "Diepenbrock", "Röntgen", "Andriessen", "Verdi",
                          "Vivaldi", "Purcell", "Grieg", "Sibelius", "Dvořák", "Ravel")),
    ("Zeeheldenbuurt", ("De Ruyter", "Tromp", "Piet Hein", "Van Speijk", "Evertsen", "Van Galen",
                        "Van Heemskerck", "Karel Doorman", "Witte de With", "Van Kinsbergen", "Banckert",
                        "Van Wassenaer", "Van Nes", "Zoutman", "Van Brakel", "Schrijver", "Bontekoe",
                        "Tasman", "Barentsz", "Houtman")),
    ("Fruitbuurt", ("Appel", "Peren", "Kersen", "Pruimen", "Aardbeien", "Frambozen", "Bramen", "Bessen",
                    "Druiven", "Kweeperen", "Mispel", "Abrikozen", "Perziken", "Vijgen", "Moerbeien",
                    "Kruisbessen", "Bosbessen", "Hazelnoot", "Rabarber", "Vlierbessen")),
    ("Sterrenbuurt", ("Orion", "Pegasus", "Andromeda", "Cassiopeia", "Sirius", "Vega", "Polaris",
                      "Capella", "Aldebaran", "Betelgeuze", "Antares", "Castor", "Pollux", "Regulus",
                      "Wega", "Draco", "Lyra", "Cygnus", "Perseus", "Hercules")),
    ("Dorpskern", ("Kerk", "Molen", "School", "Stations", "Haven", "Markt", "Kloosters", "Burg", "Dijk",
                   "Brink", "Poort", "Veer", "Gasthuis", "Raadhuis", "Pastorie", "Smids", "Bakkers",
                   "Brouwers", "Kosters", "Weverij")),
)
STREET_SUFFIXES = ("straat", "laan", "weg", "hof", "plein", "singel", "dreef", "pad", "kade", "erf",
                   "gaarde", "plantsoen")
# Used when a theme has run out of plain names within one woonplaats ("Korte Eikenlaan").
STREET_PREFIXES = ("Korte", "Lange", "Oude", "Nieuwe", "Kleine", "Grote", "Hoge", "Lage", "Noorder",
                   "Zuider", "Ooster", "Wester")

WIJK_NAMES = ("Centrum", "Noord", "Oost", "Zuid", "West", "Noordoost", "Zuidoost", "Zuidwest", "Noordwest",
              "Buitengebied", "Stationskwartier", "Havenkwartier", "Molenwijk", "Polderwijk", "Het Veld",
              "De Hoeven", "Parkwijk", "Waterrijk", "De Kamp", "Het Lage Land")
BUURT_QUALIFIERS = ("Noord", "Oost", "Zuid", "West", "Midden", "Oud", "Nieuw", "Park", "Kwartier", "Hof")
