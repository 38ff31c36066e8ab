"""Render the sidebar's dataset spec to a render set, in steps, with progress and Esc to cancel.

From the GUI (invoke) it runs modally: a timer renders a few images per tick through the one
render loop (core.render_set.RenderLoop, stepped by ui.render_job.RenderJob), the status bar and
the Render panel show progress, Esc stops after the current image. A rerun resumes: images
already complete are skipped by the loop. From scripts and background mode (execute) it
renders everything at once.
"""

from __future__ import annotations

import bpy

from ._report import report_exception

# Jobs of running modal operators, so unregister() can stop them and remove their timers.
_ACTIVE: dict[int, tuple[object, object]] = {}


def cancel_running_jobs() -> None:
    wm = bpy.context.window_manager
    for job, timer in list(_ACTIVE.values()):
        job.cancel()
        if timer is not None and wm is not None:
            wm.event_timer_remove(timer)
        try:
            job.close()
        except Exception as exc:  # noqa: BLE001 - unregistering must not fail
            print(f"carprobe: could not write the index files of {job.out_dir}: {exc}")
    _ACTIVE.clear()
    if wm is not None and getattr(wm, "carprobe_state", None) is not None:
        wm.carprobe_state.render_running = False


class CARPROBE_OT_render_dataset(bpy.types.Operator):
    """Render every sample of the dataset spec into the output folder (Esc cancels, rerun resumes)"""

    bl_idname = "carprobe.render_dataset"
    bl_label = "Render Dataset"
    bl_options = {"REGISTER"}

    step_seconds = 0.25  # render time per timer tick before the UI gets control back

    @classmethod
    def poll(cls, context):
        state = getattr(context.window_manager, "carprobe_state", None)
        return state is not None and not state.render_running

    def _make_job(self, context):
        from ...blender.render import make_image_renderer
        from ...core.sampling import sample_count
        from ..preview import current_spec, output_dir
        from ..render_job import RenderJob

        spec = current_spec(context)
        out = output_dir(context)
        return RenderJob(spec, out, make_image_renderer(spec, scratch_root=out), range(sample_count(spec)),
                         blender_version=bpy.app.version_string)

    def _show(self, context, job, message: str = "") -> None:
        state = context.window_manager.carprobe_state
        state.render_done = job.done
        state.render_total = job.total
        state.render_progress = job.progress
        state.render_message = message or job.status()
        if context.workspace is not None:
            context.workspace.status_text_set(None if not state.render_running else
                                              f"{job.status()} (Esc to cancel)")
        if context.screen is not None:
            for area in context.screen.areas:
                if area.type == "VIEW_3D":
                    area.tag_redraw()

    def execute(self, context):
        state = context.window_manager.carprobe_state
        try:
            job = self._make_job(context)
            state.render_running = True
            job.run()
        except Exception as exc:  # noqa: BLE001 - every failure becomes a report
            return report_exception(self, exc, "Render dataset")
        finally:
            state.render_running = False
        self._show(context, job)
        self.report({"INFO"}, job.status())
        return {"FINISHED"}

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        state = context.window_manager.carprobe_state
        try:
            job = self._make_job(context)
        except Exception as exc:  # noqa: BLE001
            return report_exception(self, exc, "Render dataset")
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.05, window=context.window)
        self._key = id(job)
        _ACTIVE[self._key] = (job, self._timer)
        self._job = job
        state.render_running = True
        wm.modal_handler_add(self)
        self._show(context, job)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        job = self._job
        if job.cancelled and self._key not in _ACTIVE:   # stopped by unregister()
            return {"CANCELLED"}
        if event.type == "ESC" and event.value == "PRESS":
            job.cancel()
            try:
                self._stop(context)
            except Exception as exc:  # noqa: BLE001
                return report_exception(self, exc, "Render dataset")
            self._show(context, job)
            self.report({"WARNING"}, job.status() + "; rerun Render Dataset to resume")
            return {"CANCELLED"}
        if event.type != "TIMER":
            return {"PASS_THROUGH"}   # the viewport stays usable while rendering
        try:
            finished = job.step(self.step_seconds)
        except Exception as exc:  # noqa: BLE001 - the failing image stays pending for a rerun
            try:
                self._stop(context)
            except Exception:  # noqa: BLE001 - the render error is the one to report
                pass
            self._show(context, job, f"stopped at image {job.done}/{job.total}: {exc}")
            return report_exception(self, exc, "Render dataset")
        if finished:
            try:
                self._stop(context)
            except Exception as exc:  # noqa: BLE001
                return report_exception(self, exc, "Render dataset")
            self._show(context, job)
            self.report({"INFO"}, job.status())
            return {"FINISHED"}
        self._show(context, job)
        return {"RUNNING_MODAL"}

    def _stop(self, context) -> None:
        """Remove the timer and UI state, then write the index files of what is complete."""
        context.window_manager.event_timer_remove(self._timer)
        _ACTIVE.pop(self._key, None)
        context.window_manager.carprobe_state.render_running = False
        if context.workspace is not None:
            context.workspace.status_text_set(None)
        self._job.close()
