"""Knowledge distillation (paper section 4): teachers, Knowledge Complexity (Eq. 3), the
gap-sensitive ensemble loss (Eq. 4) and knowledge boosting (Algorithm 1)."""

from .complexity import TABLE8, TABLE8_ACCURACY, TeacherInfo, count_params, knowledge_complexity, teacher_table
from .distill import Distiller
from .losses import gap_sensitive_kd, gap_weights, kd_loss, per_sample_kl, soft_target_cross_entropy
from .schedule import assistant_index, order_by_kc
from .teachers import Teacher, build_teacher, classification_builders, load_state_dict_file

__all__ = [
    "TABLE8",
    "TABLE8_ACCURACY",
    "Distiller",
    "Teacher",
    "TeacherInfo",
    "assistant_index",
    "build_teacher",
    "classification_builders",
    "count_params",
    "gap_sensitive_kd",
    "gap_weights",
    "kd_loss",
    "knowledge_complexity",
    "load_state_dict_file",
    "order_by_kc",
    "per_sample_kl",
    "soft_target_cross_entropy",
    "teacher_table",
]
