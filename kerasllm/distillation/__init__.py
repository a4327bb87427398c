"""Knowledge distillation: students built from a teacher's layers, and offline teacher-logits caches."""

from kerasllm.distillation.cache_writer import cache_teacher_logits
from kerasllm.distillation.student_from_teacher import student_from_teacher
from kerasllm.distillation.teacher_logits_cache import TeacherLogitsCache

__all__ = ["student_from_teacher", "TeacherLogitsCache", "cache_teacher_logits"]
