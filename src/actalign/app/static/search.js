// The Search tab: a click on a hit plays its video from the hit's start in the tab's player; a
// hit whose file cannot be shown says why instead.
const player = () => document.querySelector('#aa-search-player video');
const note = () => document.querySelector('#aa-search-player .aa-player-note');
const playFromStart = (event) => {
  const video = event.target;
  video.currentTime = parseFloat(video.dataset.start);
  video.play().catch(() => {});  // a browser may refuse to play; the position is set all the same
};
element.addEventListener('click', (event) => {
  const hit = event.target.closest('.aa-hit');
  const video = player();
  if (!hit || !video) return;
  element.querySelectorAll('.aa-hit').forEach((h) => h.classList.toggle('aa-chosen', h === hit));
  note().textContent = hit.dataset.gone || hit.title;
  note().classList.toggle('aa-gone', Boolean(hit.dataset.gone));
  if (hit.dataset.gone) {
    video.pause();
    video.removeAttribute('src');
    video.load();
    return;
  }
  video.dataset.start = hit.dataset.start;
  if (video.getAttribute('src') === hit.dataset.src && video.readyState >= 1) {
    playFromStart({target: video});
  } else {
    video.addEventListener('loadedmetadata', playFromStart, {once: true});
    video.src = hit.dataset.src;
  }
});
