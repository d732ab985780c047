() => {
    // Mascot Generator's page behaviour that CSS alone cannot give (run once when the page loads).
    const whenPresent = (selector, then) => {
        const found = document.querySelector(selector);
        if (found) return then(found);
        const watcher = new MutationObserver(() => {
            const element = document.querySelector(selector);
            if (element) { watcher.disconnect(); then(element); }
        });
        watcher.observe(document.body, { childList: true, subtree: true });
    };

    // On a phone Generate is pinned to the foot of the screen only while the idea box is scrolled out of view
    // (deep in More options): at the top it stays beside the idea, so it never covers the progress or the mascots.
    const phone = window.matchMedia("(max-width: 640px)");  // the width style.css lays the page out for a phone at
    whenPresent("#idea", (idea) => {
        let ideaInView = true;
        const pin = () => document.body.classList.toggle("idea-scrolled-away", phone.matches && !ideaInView);
        new IntersectionObserver(([entry]) => { ideaInView = entry.isIntersecting; pin(); }).observe(idea);
        phone.addEventListener("change", pin);
    });

    // The idea outlives a reload: when the server restarts, Gradio reloads the page as soon as it is back, and the
    // idea typed (or filled in by an example, a remix) would be gone. Kept in this tab's sessionStorage only (closing
    // the tab forgets it); storage can be refused (a Space's iframe), and then the page works as before.
    const IDEA_KEY = "mascot-generator-idea";
    const storage = (() => { try { return window.sessionStorage; } catch { return null; } })();
    whenPresent("#idea textarea", (box) => {
        if (!storage) return;
        const keep = () => { try { storage.setItem(IDEA_KEY, box.value); } catch { /* full or refused */ } };
        const kept = (() => { try { return storage.getItem(IDEA_KEY); } catch { return null; } })();
        if (kept && !box.value) {
            box.value = kept;
            box.dispatchEvent(new Event("input", { bubbles: true }));  // Gradio's own value follows the box's
        }
        box.addEventListener("input", keep);
        window.addEventListener("pagehide", keep);  // also what an example or a remix put there
    });

    // A PNG dropped anywhere on the Create tab restores its settings, as the "Remix a picture" box in More options
    // does: the file is handed to that box's own input. Drops on the logo box stay the logo box's.
    const onCreateTab = () => document.querySelector("#idea")?.offsetParent != null;
    const ownDropZone = (target) => target instanceof Element && target.closest("#logo-image, #recipe-file");
    const carriesFiles = (event) => Array.from(event.dataTransfer?.types || []).includes("Files");
    const wanted = (event) => carriesFiles(event) && onCreateTab() && !ownDropZone(event.target);
    const stopHinting = () => document.body.classList.remove("recipe-drop");
    document.addEventListener("dragover", (event) => {
        if (!wanted(event)) return stopHinting();
        event.preventDefault();
        event.dataTransfer.dropEffect = "copy";
        document.body.classList.add("recipe-drop");
    });
    document.addEventListener("dragleave", (event) => { if (event.relatedTarget === null) stopHinting(); });
    document.addEventListener("drop", (event) => {
        stopHinting();
        if (!wanted(event)) return;
        event.preventDefault();
        const picture = event.dataTransfer.files[0];
        if (!picture) return;
        const handOver = (input) => {
            const carried = new DataTransfer();
            carried.items.add(picture);
            input.files = carried.files;
            input.dispatchEvent(new Event("change", { bubbles: true }));
        };
        // Gradio draws a folded section's contents only once it is opened: open More options, which also shows the
        // settings the picture restores. The box is emptied after every picture it reads, so its input is there.
        if (!document.querySelector("#recipe-file")) document.querySelector("#more-options > .label-wrap")?.click();
        whenPresent("#recipe-file input[type=file]", handOver);
    });
}
