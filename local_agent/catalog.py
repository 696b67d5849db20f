"""Known category and defect-type names (MVTec AD and VisA). Unknown names are accepted as free text with a warning."""
from __future__ import annotations

MVTEC_AD: dict[str, tuple[str, ...]] = {
    "bottle": ("broken_large", "broken_small", "contamination"),
    "cable": ("bent_wire", "cable_swap", "combined", "cut_inner_insulation", "cut_outer_insulation", "missing_cable",
              "missing_wire", "poke_insulation"),
    "capsule": ("crack", "faulty_imprint", "poke", "scratch", "squeeze"),
    "carpet": ("color", "cut", "hole", "metal_contamination", "thread"),
    "grid": ("bent", "broken", "glue", "metal_contamination", "thread"),
    "hazelnut": ("crack", "cut", "hole", "print"),
    "leather": ("color", "cut", "fold", "glue", "poke"),
    "metal_nut": ("bent", "color", "flip", "scratch"),
    "pill": ("color", "combined", "contamination", "crack", "faulty_imprint", "pill_type", "scratch"),
    "screw": ("manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"),
    "tile": ("crack", "glue_strip", "gray_stroke", "oil", "rough"),
    "toothbrush": ("defective",),
    "transistor": ("bent_lead", "cut_lead", "damaged_case", "misplaced"),
    "wood": ("color", "combined", "hole", "liquid", "scratch"),
    "zipper": ("broken_teeth", "combined", "fabric_border", "fabric_interior", "rough", "split_teeth",
               "squeezed_teeth"),
}
VISA: dict[str, tuple[str, ...]] = {
    "candle": ("chunk_of_wax_missing", "damaged_corner_of_packaging", "different_colour_spot", "foreign_particals_on_wax",
               "weird_candle_wick", "wax_melded_out_of_the_candle", "extra_wax_in_candle"),
    "capsules": ("bubble", "discolor", "scratch", "leak", "misshape"),
    "cashew": ("burnt", "corner_or_edge_breakage", "different_colour_spot", "middle_breakage", "small_holes",
               "small_scratches", "stuck_together", "same_colour_spot"),
    "chewinggum": ("corner_missing", "scratches", "chunk_of_gum_missing", "similar_colour_spot"),
    "fryum": ("burnt", "corner_or_edge_breakage", "different_colour_spot", "fryum_stuck_together", "middle_breakage",
              "similar_colour_spot", "small_scratches"),
    "macaroni1": ("chip_around_edge_and_corner", "different_colour_spot", "middle_breakage", "small_chip_around_edge",
                  "small_cracks", "similar_colour_spot"),
    "macaroni2": ("breakage_down_the_middle", "color_spot_similar_to_the_object", "different_color_spot",
                  "small_chip_around_edge", "small_cracks", "small_scratches"),
    "pcb1": ("bent", "melt", "missing", "scratch"),
    "pcb2": ("bent", "melt", "missing", "scratch"),
    "pcb3": ("bent", "melt", "missing", "scratch"),
    "pcb4": ("burnt", "scratch", "missing", "damage", "extra", "wrong_place"),
    "pipe_fryum": ("burnt", "corner_and_edge_breakage", "different_colour_spot", "middle_breakage",
                   "similar_colour_spot", "small_scratches", "stuck_together"),
}
KNOWN_TYPES: dict[str, tuple[str, ...]] = {**MVTEC_AD, **VISA}
