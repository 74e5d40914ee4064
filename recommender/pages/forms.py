"""Forms of the pages: labelling a DESOM-2 cell, flagging DESOM-1 nodes, uploading an example."""
from django import forms

from archive.models import MIXED_LABEL, QUALITY_LABELS, PrototypeFlag

OTHER = "__other__"


class CellLabelForm(forms.Form):
    label = forms.ChoiceField(
        choices=[(label, label) for label in QUALITY_LABELS]
        + [(MIXED_LABEL, "mixed (leave unlabelled)"), (OTHER, "other (type it below)")])
    other = forms.CharField(required=False, max_length=64, label="Other label")
    note = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def clean(self):
        data = super().clean()
        if data.get("label") == OTHER:
            other = (data.get("other") or "").strip()
            if not other:
                raise forms.ValidationError("type the label in 'Other label', or pick one from the list")
            data["chosen"] = other
        else:
            data["chosen"] = data.get("label")
        return data


class NodeFlagForm(forms.Form):
    name = forms.CharField(max_length=64, help_text="an existing name updates that flag")
    nodes = forms.CharField(max_length=2000, help_text="DESOM-1 node numbers, comma separated")
    threshold = forms.FloatField(min_value=0.0001, max_value=1000, initial=0.2)
    mode = forms.ChoiceField(choices=PrototypeFlag.MODE_CHOICES, initial=PrototypeFlag.MODE_SHARE)
    description = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}))

    def clean_nodes(self):
        text = self.cleaned_data["nodes"]
        try:
            nodes = sorted({int(part) for part in text.replace(" ", ",").split(",") if part.strip()})
        except ValueError:
            raise forms.ValidationError("nodes must be whole numbers separated by commas, e.g. 12, 13, 27")
        if not nodes:
            raise forms.ValidationError("give at least one node")
        return nodes


class UploadForm(forms.Form):
    CUTOUT, EXPOSURE = "cutout", "exposure"
    kind = forms.ChoiceField(choices=[(CUTOUT, "a 32x32 source cutout (FITS, .npy or PNG)"),
                                      (EXPOSURE, "a whole exposure (FITS, .fits.gz)")],
                             widget=forms.RadioSelect, initial=CUTOUT)
    file = forms.FileField()
    k = forms.IntegerField(min_value=1, max_value=50, initial=12, label="results")
