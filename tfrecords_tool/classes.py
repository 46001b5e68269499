"""The 16 RVL-CDIP classes, in their fixed id order."""

RVL_CDIP_CLASSES = (
    "letter", "form", "email", "handwritten", "advertisement", "scientific report",
    "scientific publication", "specification", "file folder", "news article", "budget",
    "invoice", "presentation", "questionnaire", "resume", "memo",
)
NUM_CLASSES = len(RVL_CDIP_CLASSES)
