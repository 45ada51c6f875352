"""The seven offline zero-shot tasks: official document counts and known gold answers."""
import pytest

from evaluation.zeroshot_tasks import OFFICIAL_COUNTS, TaskDataError, gold, load_docs, task_config


@pytest.fixture(scope="module")
def data_dir(shared_data_dir):
    if shared_data_dir is None:
        pytest.skip("needs ../shared/data (the task files are not bundled)")
    return shared_data_dir


@pytest.mark.parametrize("task", list(OFFICIAL_COUNTS))
def test_official_document_counts(task, data_dir):
    assert len(load_docs(task, data_dir)) == OFFICIAL_COUNTS[task]


@pytest.mark.parametrize("task,index,answer,fragment", [
    ("boolq", 0, 0, "does ethanol take more energy"),  # False in SuperGLUE
    ("boolq", 1, 1, "house tax and property tax"),  # True
    ("piqa", 0, 0, "guinea pig cage"),  # sol1: paper strips, not jeans
    ("hellaswag", 1, 3, "The lady"),  # "stands and lifts the weight over her head"; ctx_b capitalised
    ("winogrande", 1, 0, "always got the harder cases"),  # the better surgeon: Sarah
    ("arc_easy", 0, 0, "photosynthesis is the foundation"),  # sunlight
    ("openbookqa", 1, 0, "fog around"),  # a marsh
])
def test_gold_labels_on_known_rows(task, index, answer, fragment, data_dir):
    doc = load_docs(task, data_dir)[index]
    assert fragment in str(doc)
    assert gold(task, doc) == answer


def test_winogrande_partial_scoring_config(data_dir):
    config = task_config("winogrande", data_dir)
    doc = load_docs("winogrande", data_dir)[1]
    assert config["doc_to_choice"](doc) == ["Sarah was a much better surgeon than Maria so Sarah",
                                            "Sarah was a much better surgeon than Maria so Maria"]
    assert config["doc_to_target"](doc) == "always got the harder cases."
    assert config["doc_to_text"](doc) == 0


def test_missing_file_and_unknown_task(tmp_path):
    with pytest.raises(TaskDataError, match="boolq/val.jsonl"):
        load_docs("boolq", tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        load_docs("mmlu", tmp_path)
